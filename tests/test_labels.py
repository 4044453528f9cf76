"""The one label table (ml/labels.py) and everything that must cover it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from bot.chart import _emotion_axis, render_mood_chart
from bot.history import HistoryStore, MoodEntry
from bot.music import KEYWORDS, MODES, music_mood, normalize_emotion
from bot.texts import LANGUAGES, emotion_name
from bot.web.page import page_texts
from ml.labels import (
    ALIASES,
    CHART_COLORS,
    CHART_ORDER,
    EMOJI,
    EMOTIONS,
    FER_LABELS,
    LABELS,
    MUSIC_MOODS,
    emotion_for,
)
from training.aihub import canonical_label

HANGUL = re.compile(r"^[\uac00-\ud7a3]+$")
HEX_COLOUR = re.compile(r"^#[0-9a-f]{6}$")


@pytest.mark.parametrize("label", LABELS, ids=lambda label: label.name)
def test_every_label_has_a_korean_name_an_emoji_and_a_colour(label) -> None:
    assert HANGUL.match(label.korean)
    assert label.emoji and not label.emoji.isascii()
    assert HEX_COLOUR.match(label.color)
    assert label.name in CHART_ORDER


def test_names_emoji_and_colours_are_distinct() -> None:
    for values in (
        [label.name for label in LABELS],
        [label.korean for label in LABELS],
        [label.emoji for label in LABELS],
        [label.color for label in LABELS],
    ):
        assert len(set(values)) == len(values)
    assert sorted(CHART_ORDER) == sorted(MUSIC_MOODS)


def test_embarrassed_is_a_product_emotion_and_calm_is_music_only() -> None:
    assert "embarrassed" in EMOTIONS and "calm" not in EMOTIONS
    assert (*EMOTIONS, "calm") == MUSIC_MOODS
    assert set(FER_LABELS) <= set(EMOTIONS)
    assert (emotion_name("ko", "embarrassed"), EMOJI["embarrassed"]) == ("당황", "😳")
    assert emotion_for("당황") == emotion_for(" Embarrassment ") == "embarrassed"
    assert emotion_for("calm") is None and emotion_for(None) is None


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_texts_and_music_cover_every_emotion(emotion: str) -> None:
    assert emotion_name("en", emotion) == emotion
    assert HANGUL.match(emotion_name("ko", emotion))
    for lang in LANGUAGES:
        page = page_texts(lang)
        assert page["emotions"][emotion] == emotion_name(lang, emotion)
        assert page["emoji"][emotion] == EMOJI[emotion]
    assert len(set(KEYWORDS[emotion])) == 10
    assert normalize_emotion(emotion_name("ko", emotion)) == emotion
    assert {music_mood(emotion, mode) for mode in MODES} <= set(KEYWORDS)


def test_aliases_and_korean_names_read_dataset_folders() -> None:
    for alias, emotion in ALIASES.items():
        assert canonical_label(alias) == emotion
    assert canonical_label("당황") == "embarrassed"


def test_an_old_database_with_old_and_unknown_labels_still_charts(tmp_path) -> None:
    """Rows written before a label existed, or by a model with other classes, stay readable."""
    when = datetime(2026, 5, 1, 8, tzinfo=UTC)
    old = ["happy", "anxious", "hurt", "contempt"]  # contempt: a label the table never had
    with HistoryStore(tmp_path / "old.db") as store:
        for emotion in old:
            store.record(MoodEntry("telegram", "c1", "u1", emotion, 0.5, 1, when))
        entries = store.recent("telegram", "u1", limit=10)
    assert sorted(entry.emotion for entry in entries) == sorted(old)
    assert _emotion_axis(entries) == ["happy", "hurt", "anxious", "contempt"]
    assert render_mood_chart(entries)[:4] == b"\x89PNG"
    assert emotion_name("ko", "contempt") == "contempt" and "contempt" not in CHART_COLORS
