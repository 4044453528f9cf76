"""A PNG chart of a user's moods over time, sized for a chat message, in English or Korean.

matplotlib's bundled fonts have no Hangul, so Korean charts use NanumGothic (SIL Open Font
License), taken from the files the `koreanize-matplotlib` wheel ships: it installs from the
lock file like any dependency, and no system font is needed. The package itself is never
imported, as importing it changes matplotlib's global settings.
"""

from __future__ import annotations

import functools
import io
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from importlib import metadata
from typing import Any

from matplotlib import dates as mdates
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bot.history import MoodEntry
from bot.texts import emotion_name, say
from ml.labels import CHART_COLORS, CHART_ORDER

logger = logging.getLogger(__name__)

FONT_PACKAGE = "koreanize-matplotlib"
HANGUL_FONT_FILES = ("NanumGothic.ttf", "NanumGothicBold.ttf")

# Unknown labels get these in order of appearance on the axis, so colours are stable.
_SPARE_COLORS = ("#17becf", "#bcbd22", "#8c564b", "#e377c2", "#7f7f7f", "#1f77b4")

_WIDTH_IN, _HEIGHT_IN, _DPI = 9.0, 5.0, 100  # 900 x 500 px: readable inline in a chat
_LINE_COLOR = "#b8bec6"
_TEXT_COLOR = "#333333"


@functools.cache
def hangul_font() -> str | None:
    """Register the shipped NanumGothic files with matplotlib; their family name, or None."""
    try:
        files = metadata.files(FONT_PACKAGE) or []
    except metadata.PackageNotFoundError:
        logger.warning("%s is not installed: Korean charts will show boxes", FONT_PACKAGE)
        return None
    paths = [str(f.locate()) for f in files if f.name in HANGUL_FONT_FILES]
    if not paths:
        logger.warning("%s ships no %s", FONT_PACKAGE, HANGUL_FONT_FILES[0])
        return None
    for path in paths:
        font_manager.fontManager.addfont(path)
    return font_manager.FontProperties(fname=paths[0]).get_name()


def _font(lang: str, *, bold: bool = False) -> dict[str, Any]:
    """Keyword arguments that set a text's font for `lang` (none: matplotlib's default)."""
    family = hangul_font() if lang == "ko" else None
    font: dict[str, Any] = {"fontweight": "bold"} if bold else {}
    if family:
        font["fontfamily"] = family  # it has Latin letters and digits too
        if bold:
            font["fontweight"] = 600  # NanumGothicBold declares 600, not 700
    return font


def _emotion_axis(entries: Sequence[MoodEntry]) -> list[str]:
    """Return the emotions present, known ones in CHART_ORDER, unknown ones sorted after."""
    present = {entry.emotion for entry in entries}
    known = [emotion for emotion in CHART_ORDER if emotion in present]
    return known + sorted(present - set(CHART_ORDER))


def _colors(labels: Sequence[str]) -> dict[str, str]:
    spare = iter(_SPARE_COLORS * (len(labels) // len(_SPARE_COLORS) + 1))
    return {label: CHART_COLORS.get(label) or next(spare) for label in labels}


def _marker_size(entry: MoodEntry) -> float:
    # Area in points^2: a sure reading is clearly bigger, an unsure one still visible. A
    # corrected mood is the person's own word: full size.
    confidence = 1.0 if entry.corrected else entry.confidence
    return 40.0 + 200.0 * max(0.0, min(1.0, confidence))


def _style(ax: Axes, font: dict[str, Any]) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.spines["left"].set_color(_LINE_COLOR)
    ax.spines["bottom"].set_color(_LINE_COLOR)
    family = font.get("fontfamily")
    ax.tick_params(
        colors=_TEXT_COLOR, labelsize=11, **({"labelfontfamily": family} if family else {})
    )
    ax.grid(axis="y", color="#eceff2", linewidth=1.0)
    ax.set_axisbelow(True)


def _plot_timeline(
    ax: Axes,
    entries: Sequence[MoodEntry],
    rows: dict[str, int],
    colors: dict[str, str],
    lang: str,
) -> None:
    times = [entry.created_at for entry in entries]
    ys = [rows[entry.emotion] for entry in entries]
    ax.plot(times, ys, color=_LINE_COLOR, linewidth=1.0, zorder=1)
    ax.scatter(
        times,
        ys,
        s=[_marker_size(entry) for entry in entries],
        c=[colors[entry.emotion] for entry in entries],
        edgecolors="white",
        linewidths=1.0,
        zorder=2,
    )
    locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    # Times are stored in UTC; say so in the offset text rather than in a separate label.
    offsets = ["UTC", "%Y UTC", "%Y-%b UTC", "%Y-%b-%d UTC", "%Y-%b-%d UTC", "%Y-%b-%d %H:%M UTC"]
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, offset_formats=offsets))
    start, end = times[0], times[-1]
    # A single moment would otherwise get matplotlib's default span of years.
    pad = max((end - start) * 0.05, timedelta(hours=1))
    ax.set_xlim(start - pad, end + pad)
    font = _font(lang)
    ax.set_title(say(lang, "chart_dots"), loc="left", color="#777777", fontsize=10, **font)
    _style(ax, font)


def _plot_counts(
    ax: Axes,
    labels: Sequence[str],
    entries: Sequence[MoodEntry],
    colors: dict[str, str],
    lang: str,
) -> None:
    counts = Counter(entry.emotion for entry in entries)
    values = [counts[label] for label in labels]
    bars = ax.barh(range(len(labels)), values, color=[colors[label] for label in labels])
    ax.bar_label(bars, padding=3, color=_TEXT_COLOR, fontsize=10)
    ax.set_xlim(0, max(values) * 1.25)
    ax.set_xticks([])
    font = _font(lang)
    ax.set_title(say(lang, "chart_count"), color=_TEXT_COLOR, fontsize=11, **font)
    ax.tick_params(axis="y", left=False, labelleft=False)
    _style(ax, font)
    ax.spines["bottom"].set_visible(False)


def render_mood_chart(
    entries: Sequence[MoodEntry], *, lang: str = "en", title: str | None = None
) -> bytes:
    """Render moods over time plus a count per mood as a 900x500 PNG, labelled in `lang`."""
    if not entries:
        raise ValueError("cannot chart an empty list of mood entries")
    ordered = sorted(entries, key=lambda entry: entry.created_at)
    labels = _emotion_axis(ordered)
    # Top row is the first label: y positions count down from len(labels) - 1.
    rows = {label: len(labels) - 1 - index for index, label in enumerate(labels)}
    colors = _colors(labels)

    # Figure + Agg canvas directly: no pyplot global state, safe to call from worker threads.
    fig = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    timeline, counts = fig.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": (4, 1), "wspace": 0.02}
    )
    _plot_timeline(timeline, ordered, rows, colors, lang)
    _plot_counts(counts, labels[::-1], ordered, colors, lang)
    timeline.set_yticks(range(len(labels)), [emotion_name(lang, label) for label in labels[::-1]])
    timeline.set_ylim(-0.6, len(labels) - 0.4)
    heading = title if title is not None else say(lang, "chart_title")
    fig.suptitle(heading, color=_TEXT_COLOR, fontsize=15, **_font(lang, bold=True))

    buffer = io.BytesIO()
    # No Software/date metadata: the same entries give the same bytes.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    logger.debug("Rendered mood chart of %d entries (%d bytes)", len(entries), buffer.tell())
    return buffer.getvalue()
