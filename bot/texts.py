"""Every sentence moodbot says, in English and Korean, in one place."""

from __future__ import annotations

from bot.music import KOREAN_NAMES

EMOJI = {
    "happy": "😄",
    "sad": "😢",
    "angry": "😠",
    "anxious": "😟",
    "hurt": "🤕",
    "neutral": "😐",
    "fear": "😨",
    "disgust": "🤢",
    "surprise": "😮",
    "calm": "😌",
}

# "calm" is a music mood (the calm mode), not an emotion the model reads.
MOOD_NAMES_KO = {**KOREAN_NAMES, "calm": "평온"}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "help": (
            "Send me a selfie and I'll tell you the mood I see and find music for it.\n"
            "/history — your recent moods, with a chart\n"
            "/group — one playlist for this chat, from its members' recent moods "
            "(or send a group photo with /group)\n"
            "/mode match|lift|calm — music that matches your mood, lifts it, or calms it\n"
            "/genre <words> — a genre or language to add to searches (/genre off to clear)\n"
            "/forget — delete everything I stored about you\n"
            "I keep only the emotion, its confidence and the time, never your photo."
        ),
        "one_face": "You look {emotion} {emoji} ({confidence} sure).",
        "unsure": "I'm not sure: maybe {first} ({p1}) or {second} ({p2}).",
        "many_faces": "I see {count} faces: {faces}.",
        "face_item": "{emotion} {emoji} {confidence}",
        "why_match": "🎵 For a {mood} mood, searched with “{words}”.",
        "why_changed": "🎵 You look {emotion}; in {mode} mode I picked {mood} music, searched "
        "with “{words}”.",
        "why_links": " Spotify is not reachable right now, so here are search links.",
        "why_links_unconfigured": " (Spotify search links.)",
        "no_face": "Sorry, I can't recognize a face in this photo. Try a brighter, "
        "front-facing selfie.",
        "unreadable": "I couldn't read that file as a photo. Please send a JPEG, PNG, WebP, "
        "GIF or BMP image.",
        "too_large": "That image is too large for me ({detail}). Please send a smaller one.",
        "busy": "I'm busy with other photos right now. Try again in a moment.",
        "closed": "I'm restarting. Try again in a moment.",
        "error": "Something went wrong on my side while reading your photo. Please try again.",
        "history_unsaved": "(I couldn't save this to your history just now.)",
        "history_unavailable": "Your history is not available right now. Please try again later.",
        "history_empty": "No moods yet. Send me a selfie!",
        "history_title": "Your last {count} moods:",
        "history_row": "{when} — {emotion} {emoji} {confidence}",
        "history_counts": "Last {days} days: {counts}",
        "chart_title": "Your moods",
        "group_empty": "Nobody here has sent me a selfie in the last {hours} hours. "
        "Send selfies first, or a group photo with /group.",
        "group_title": "Group mix for {count} {people}: {breakdown}.",
        "group_photo_title": "Group photo with {count} {people}: {breakdown}.",
        "person": "person",
        "people": "people",
        "forgotten": "Done: I deleted {count} mood records of yours. Nothing about you is left.",
        "mode_set": "Music mode set to {mode}.",
        "mode_bad": "Mode must be one of: match, lift, calm.",
        "genre_set": "I'll add “{genre}” to your music searches.",
        "genre_cleared": "No genre any more: searches use only the mood words.",
        "genre_bad": "Please give a genre of at most 40 characters, like /genre k-pop.",
        "unknown_command": "I don't know that command. /help lists what I can do.",
        "not_a_file": "I couldn't open {path}: {reason}",
    },
    "ko": {
        "help": (
            "셀카를 보내 주시면 표정에서 감정을 읽고 어울리는 음악을 찾아 드려요.\n"
            "/history — 최근 감정 기록과 차트\n"
            "/group — 이 채팅방 멤버들의 최근 감정으로 고른 플레이리스트 "
            "(단체 사진과 함께 /group도 가능)\n"
            "/mode match|lift|calm — 감정에 맞추기, 기분 끌어올리기, 진정시키기\n"
            "/genre <단어> — 검색에 더할 장르나 언어 (/genre off로 해제)\n"
            "/forget — 저장된 내 기록 모두 삭제\n"
            "사진은 저장하지 않고 감정, 확신도, 시간만 기록해요."
        ),
        "one_face": "{emotion} {emoji} 표정이에요 (확신도 {confidence}).",
        "unsure": "잘 모르겠어요: {first} ({p1}) 또는 {second} ({p2}) 같아요.",
        "many_faces": "얼굴 {count}개를 찾았어요: {faces}.",
        "face_item": "{emotion} {emoji} {confidence}",
        "why_match": "🎵 {mood} 기분에 맞춰 “{words}”(으)로 검색했어요.",
        "why_changed": "🎵 {emotion} 표정이라 {mode} 모드로 {mood} 음악을 “{words}”(으)로 "
        "검색했어요.",
        "why_links": " 지금 Spotify에 연결할 수 없어 검색 링크를 드려요.",
        "why_links_unconfigured": " (Spotify 검색 링크)",
        "no_face": "죄송해요, 사진에서 얼굴을 찾지 못했어요. 밝은 곳에서 정면 셀카로 다시 "
        "보내 주세요.",
        "unreadable": "이 파일은 사진으로 읽을 수 없어요. JPEG, PNG, WebP, GIF, BMP 이미지를 "
        "보내 주세요.",
        "too_large": "이미지가 너무 커요 ({detail}). 더 작은 사진을 보내 주세요.",
        "busy": "지금 다른 사진을 처리하느라 바빠요. 잠시 후 다시 시도해 주세요.",
        "closed": "재시작하는 중이에요. 잠시 후 다시 시도해 주세요.",
        "error": "사진을 읽는 중에 문제가 생겼어요. 다시 시도해 주세요.",
        "history_unsaved": "(지금은 기록을 저장하지 못했어요.)",
        "history_unavailable": "지금은 기록을 볼 수 없어요. 잠시 후 다시 시도해 주세요.",
        "history_empty": "아직 기록이 없어요. 셀카를 보내 주세요!",
        "history_title": "최근 감정 {count}개:",
        "history_row": "{when} — {emotion} {emoji} {confidence}",
        "history_counts": "최근 {days}일: {counts}",
        "chart_title": "나의 감정 기록",
        "group_empty": "최근 {hours}시간 동안 이 방에서 셀카를 보낸 사람이 없어요. 먼저 셀카를 "
        "보내거나 단체 사진과 함께 /group을 보내 주세요.",
        "group_title": "{count}{people}의 그룹 믹스: {breakdown}.",
        "group_photo_title": "단체 사진 속 {count}{people}: {breakdown}.",
        "person": "명",
        "people": "명",
        "forgotten": "삭제했어요: 감정 기록 {count}개를 지웠고, 남은 정보는 없어요.",
        "mode_set": "음악 모드를 {mode}(으)로 바꿨어요.",
        "mode_bad": "모드는 match, lift, calm 중 하나예요.",
        "genre_set": "음악 검색에 “{genre}”을(를) 더할게요.",
        "genre_cleared": "장르를 해제했어요. 감정 단어로만 검색해요.",
        "genre_bad": "장르는 40자 이내로 적어 주세요. 예: /genre k-pop",
        "unknown_command": "모르는 명령이에요. /help 로 할 수 있는 일을 보세요.",
        "not_a_file": "{path} 파일을 열 수 없어요: {reason}",
    },
}

LANGUAGES = tuple(MESSAGES)


def language_of(code: str | None) -> str:
    """Korean for Korean users, English for everyone else (e.g. 'ko-KR' -> 'ko')."""
    return "ko" if code and code.lower().startswith("ko") else "en"


def say(lang: str, key: str, **values: object) -> str:
    """The message `key` in `lang` (English when missing), filled with `values`."""
    template = MESSAGES.get(lang, MESSAGES["en"]).get(key) or MESSAGES["en"][key]
    return template.format(**values)


def emotion_name(lang: str, emotion: str) -> str:
    return MOOD_NAMES_KO.get(emotion, emotion) if lang == "ko" else emotion


def percent(p: float) -> str:
    return f"{round(p * 100)}%"
