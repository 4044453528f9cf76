"""The demo page's words: its own labels plus the bots' sentences, in English and Korean."""

from __future__ import annotations

from typing import Any

from bot.texts import LANGUAGES, MESSAGES, emotion_name
from ml.labels import EMOJI, EMOTIONS

# Only what the page itself shows; everything about moods and errors comes from bot/texts.py.
PAGE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "moodbot — music for the mood on your face",
        "tagline": "Show me a face, I'll read the mood and find music for it.",
        "choose": "Choose a photo",
        "camera": "Take a selfie",
        "drop": "…or drop a photo here",
        "working": "Reading the mood…",
        "music": "Music for you",
        "why": "Why these songs",
        "faces": "Faces",
        "fix_hint": "Not quite? Click the mood you really feel for music that fits it.",
        "again": "Try another photo",
        "privacy": "Your photo is analysed in memory and dropped right away: it is never stored, "
        "and this demo keeps no history.",
        "network": "I couldn't reach the server. Check your connection and try again.",
        "language": "한국어",
    },
    "ko": {
        "title": "moodbot — 표정에 어울리는 음악",
        "tagline": "얼굴 사진을 보여 주시면 감정을 읽고 어울리는 음악을 찾아 드려요.",
        "choose": "사진 고르기",
        "camera": "셀카 찍기",
        "drop": "…또는 여기에 사진을 끌어다 놓으세요",
        "working": "감정을 읽는 중…",
        "music": "추천 음악",
        "why": "이 음악을 고른 이유",
        "faces": "얼굴",
        "fix_hint": "아닌가요? 실제 기분을 누르면 그에 맞는 음악을 찾아 드려요.",
        "again": "다른 사진으로 해 보기",
        "privacy": "사진은 메모리에서 분석한 뒤 바로 버려요. 저장하지 않고, 이 데모는 기록도 "
        "남기지 않아요.",
        "network": "서버에 연결할 수 없어요. 연결을 확인하고 다시 시도해 주세요.",
        "language": "English",
    },
}

# The bots' own sentences the page shows for errors it can spot before uploading.
_SHARED_KEYS = ("no_face", "unreadable", "too_large", "busy", "closed", "error", "rate_limited")


def negotiate_language(accept_language: str | None, requested: str | None = None) -> str:
    """`requested` when it is a language we speak, else the best of Accept-Language, else en."""
    if requested in LANGUAGES:
        return requested
    best, best_q = "en", 0.0
    for item in (accept_language or "").split(","):
        tag, _, params = item.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if lang in LANGUAGES and quality > best_q:
            best, best_q = lang, quality
    return best


def page_texts(lang: str) -> dict[str, Any]:
    """Everything the page needs to speak `lang`: its labels, error sentences, mood names."""
    texts: dict[str, Any] = dict(PAGE_TEXTS[lang])
    texts.update({key: MESSAGES[lang][key] for key in _SHARED_KEYS})
    texts["emotions"] = {name: emotion_name(lang, name) for name in EMOTIONS}
    texts["emoji"] = dict(EMOJI)
    return texts
