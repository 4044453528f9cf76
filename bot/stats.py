"""`moodbot stats`: how often people corrected the model, read from the history database.

The predicted-vs-corrected matrix is the model's real-world confusion, as the people in the
photos see it: one row per emotion the model read, one column per emotion they chose. It counts
rows as they are now (a mood corrected twice counts once, with its last choice), whereas the
`moodbot_corrections_total` counter on /metrics counts every correction as it happens.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.history import CorrectionStats


def since_days(days: int | None, now: datetime) -> datetime | None:
    """The start of the last `days` days (None or 0: all time)."""
    return now - timedelta(days=days) if days else None


def stats_json(stats: CorrectionStats, days: int | None) -> dict[str, Any]:
    """The stats as plain JSON: counts, and the matrix as {predicted: {corrected: n}}."""
    matrix: dict[str, dict[str, int]] = {}
    for (predicted, corrected), count in stats.matrix.items():
        matrix.setdefault(predicted, {})[corrected] = count
    return {
        "days": days or None,
        "analyses": stats.analyses,
        "corrections": stats.corrections,
        "correction_rate": round(stats.corrections / stats.analyses, 4) if stats.analyses else 0,
        "predicted": stats.predicted,
        "matrix": matrix,
    }


def stats_text(stats: CorrectionStats, days: int | None) -> str:
    """A short report with the matrix as a table (only emotions that occur)."""
    period = f"last {days} days" if days else "all time"
    rate = f" ({stats.corrections / stats.analyses:.1%})" if stats.analyses else ""
    lines = [
        f"Analyses ({period}): {stats.analyses}",
        f"Corrections: {stats.corrections}{rate}",
    ]
    if not stats.matrix:
        return "\n".join(lines)
    rows = sorted({p for p, _ in stats.matrix})
    columns = sorted({c for _, c in stats.matrix})
    corner = "read \\ chosen"
    first = max(len(corner), *(len(r) for r in rows))
    widths = [max(len(c), 3) for c in columns]
    header = [corner.ljust(first), *(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["", "Predicted (rows) vs corrected (columns):", "  ".join(header)]
    for row in rows:
        cells = [
            str(stats.matrix.get((row, column), "·")).rjust(width)
            for column, width in zip(columns, widths, strict=True)
        ]
        lines.append("  ".join([row.ljust(first), *cells]))
    return "\n".join(lines)
