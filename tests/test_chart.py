"""Mood chart rendering."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image
import pytest

from bot.chart import _emotion_axis, render_mood_chart
from bot.history import MoodEntry

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def mood(emotion: str, hours: float, confidence: float = 0.8) -> MoodEntry:
    return MoodEntry("telegram", "c1", "u1", emotion, confidence, 1, T0 + timedelta(hours=hours))


WEEK = [
    mood("happy", 0, 0.95),
    mood("sad", 20, 0.4),
    mood("neutral", 30),
    mood("happy", 49, 0.6),
    mood("angry", 75, 0.9),
    mood("anxious", 100, 0.3),
    mood("hurt", 130),
    mood("happy", 160, 0.99),
]


def pixel_shape(png: bytes) -> tuple[int, ...]:
    return matplotlib.image.imread(io.BytesIO(png), format="png").shape


def test_renders_a_chat_sized_png() -> None:
    png = render_mood_chart(WEEK)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixel_shape(png) == (500, 900, 4)
    assert 10_000 < len(png) < 500_000


def test_empty_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        render_mood_chart([])


def test_single_entry() -> None:
    png = render_mood_chart([mood("calm", 0)], title="Just one")
    assert pixel_shape(png) == (500, 900, 4)


def test_unknown_labels_are_appended_after_known_ones() -> None:
    entries = [mood("zesty", 0), mood("sad", 1), mood("bored", 2), mood("happy", 3)]
    assert _emotion_axis(entries) == ["happy", "sad", "bored", "zesty"]
    assert pixel_shape(render_mood_chart(entries)) == (500, 900, 4)


def test_many_unknown_labels() -> None:
    entries = [mood(f"mood-{n:02d}", n) for n in range(15)]
    assert pixel_shape(render_mood_chart(entries)) == (500, 900, 4)


def test_output_is_deterministic_and_order_free() -> None:
    newest_first = list(reversed(WEEK))
    assert render_mood_chart(WEEK) == render_mood_chart(newest_first)


def test_title_changes_the_image() -> None:
    assert render_mood_chart(WEEK, title="A") != render_mood_chart(WEEK, title="B")


def test_threads_render_side_by_side() -> None:
    expected = render_mood_chart(WEEK)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: render_mood_chart(WEEK), range(8)))
    assert results == [expected] * 8


def test_chart_does_not_touch_pyplot() -> None:
    code = "import sys, bot.chart; print('matplotlib.pyplot' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout == "False\n"


# --- Korean -------------------------------------------------------------------------------------


def test_the_hangul_font_resolves_by_name_from_the_installed_package() -> None:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    from bot.chart import hangul_font

    assert hangul_font() == "NanumGothic"
    path = font_manager.findfont("NanumGothic", fallback_to_default=False)
    assert "koreanize_matplotlib" in path  # the wheel's file, not a system font
    glyphs = FT2Font(path).get_charmap()
    assert all(ord(char) in glyphs for char in "기쁨슬픔분노당황내감정횟수")


def render_noting_missing_glyphs(**options: object) -> tuple[bytes, list[str]]:
    """Render WEEK; also the glyphs matplotlib warned it could not find."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = render_mood_chart(WEEK, **options)  # type: ignore[arg-type]
    return png, [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_korean_chart_has_korean_labels_in_a_hangul_font(monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.chart

    korean, missing = render_noting_missing_glyphs(lang="ko")
    assert missing == []
    assert pixel_shape(korean) == (500, 900, 4)
    assert korean != render_mood_chart(WEEK)  # Korean words, not the English ones

    # The same chart without the font: matplotlib draws boxes ("tofu") and says so.
    monkeypatch.setattr(bot.chart, "hangul_font", lambda: None)
    tofu, missing = render_noting_missing_glyphs(lang="ko")
    assert any("HANGUL" in message for message in missing)
    pixels = matplotlib.image.imread(io.BytesIO(korean), format="png")
    boxes = matplotlib.image.imread(io.BytesIO(tofu), format="png")
    # The title row differs: glyphs against boxes.
    assert (pixels[:60] != boxes[:60]).any()


def test_corrected_moods_are_drawn_at_full_size() -> None:
    corrected = [mood("sad", 0, 0.2), mood("happy", 5, 0.9)]
    marked = [
        MoodEntry("telegram", "c1", "u1", "sad", 0.2, 1, T0, predicted="happy"),
        mood("happy", 5, 0.9),
    ]
    assert render_mood_chart(corrected) != render_mood_chart(marked)
