"""The console chat in-process: its commands reach the core as the bots' do."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.console import CHART_FILE, ConsoleChat, console_sender
from bot.core import DEFAULT_HISTORY, MoodService
from bot.history import AsyncHistory, MoodEntry
from bot.music import MusicRecommender
from ml.engine import EmotionEngine

pytestmark = pytest.mark.slow


@pytest.fixture
def chat(engine: EmotionEngine, history: AsyncHistory, tmp_path: Path) -> ConsoleChat:
    service = MoodService(engine, MusicRecommender(None, rng=random.Random(3)), history)
    return ConsoleChat(
        service, sender=console_sender(), max_bytes=1_000_000, chart_dir=tmp_path, out=io.StringIO()
    )


@pytest.mark.parametrize(
    ("arg", "shown"),
    [("²", 10), ("٣", 10), ("0", 10), ("-1", 10), ("x", 10), ("3", 3), ("9" * 5000, 12)],
)
async def test_history_with_any_argument_answers(
    chat: ConsoleChat, history: AsyncHistory, arg: str, shown: int
) -> None:
    """`/history ²` crashed the console's own copy of the parsing; it now uses the core's."""
    assert DEFAULT_HISTORY == 10
    when = datetime(2026, 5, 1, tzinfo=UTC)
    for _ in range(12):
        await history.record(
            MoodEntry("console", "console", chat.sender.user_id, "happy", 0.5, 1, when)
        )
    reply = await chat.handle(f"/history {arg}")
    assert f"Your last {shown} moods:" in reply.text


async def test_photo_and_chart_files_are_read_and_written(
    chat: ConsoleChat, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    (tmp_path / "me.jpg").write_bytes(astronaut_jpeg)
    assert (await chat.handle(str(tmp_path / "me.jpg"))).text.startswith("You look happy")
    await chat._show(await chat.handle("/history"))
    assert (tmp_path / CHART_FILE).read_bytes().startswith(b"\x89PNG")
    missing = await chat.handle("nowhere-at-all.jpg")
    assert missing.error_code == "unreadable" and "no such file" in missing.text
