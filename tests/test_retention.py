"""MOODBOT_RETENTION_DAYS: moods older than N days are deleted at start-up and then hourly."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import app
from bot.app import open_service, retention_purge
from bot.history import AsyncHistory, MoodEntry
from bot.settings import load_settings
from ml.engine import EmotionEngine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def mood(user: str, age: timedelta, now: datetime = NOW) -> MoodEntry:
    return MoodEntry("telegram", "chat-1", user, "happy", 0.9, 1, now - age)


async def ages_in_days(history: AsyncHistory, *users: str, now: datetime = NOW) -> list[int]:
    entries = [e for user in users for e in await history.recent("telegram", user, limit=100)]
    return sorted((now - e.created_at).days for e in entries)


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


@pytest.fixture
async def aged_history(tmp_path: Path) -> AsyncHistory:
    history = await AsyncHistory.open(tmp_path / "moods.db")
    for user, days in [("ann", 400), ("ann", 31), ("ann", 29), ("bo", 1), ("bo", 365)]:
        await history.record(mood(user, timedelta(days=days)))
    yield history
    await history.aclose()


async def test_old_moods_go_at_start_and_recent_ones_stay(
    aged_history: AsyncHistory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bot.app"):
        async with retention_purge(aged_history, 30, clock=lambda: NOW) as task:
            await wait_until(lambda: _fewer_than(aged_history, 5))
            assert task is not None and not task.done()
    assert await ages_in_days(aged_history, "ann", "bo") == [1, 29]
    assert "Retention: deleted 3 moods older than 30 days" in caplog.messages
    assert task.cancelled()  # stopped cleanly on the way out


async def test_zero_days_keeps_everything(aged_history: AsyncHistory) -> None:
    async with retention_purge(aged_history, 0, every_s=0.01) as task:
        assert task is None
        await asyncio.sleep(0.1)
    assert await ages_in_days(aged_history, "ann", "bo") == [1, 29, 31, 365, 400]


async def test_the_purge_repeats_as_time_passes(aged_history: AsyncHistory) -> None:
    now = [NOW]
    async with retention_purge(aged_history, 30, every_s=0.02, clock=lambda: now[0]):
        await wait_until(lambda: _fewer_than(aged_history, 3))
        now[0] = NOW + timedelta(days=2)  # the 29-day-old mood is now 31 days old
        await wait_until(lambda: _fewer_than(aged_history, 2))
    assert await ages_in_days(aged_history, "ann", "bo") == [1]


async def test_a_failing_purge_does_not_stop_the_next_one(
    aged_history: AsyncHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.history import HistoryUnavailable

    real = aged_history.delete_older_than
    calls = []

    async def flaky(cutoff: datetime) -> int:
        calls.append(cutoff)
        if len(calls) == 1:
            raise HistoryUnavailable("moods.db", "disk I/O error")
        return await real(cutoff)

    monkeypatch.setattr(aged_history, "delete_older_than", flaky)
    async with retention_purge(aged_history, 30, every_s=0.02, clock=lambda: NOW):
        await wait_until(lambda: _fewer_than(aged_history, 5))
    assert len(calls) >= 2


@pytest.mark.slow
async def test_open_service_purges_the_database_file_it_opens(
    tmp_path: Path, engine: EmotionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring: MOODBOT_RETENTION_DAYS reaches the purge, which stops with the service."""
    db = tmp_path / "moods.db"
    now = datetime.now(UTC)
    async with await AsyncHistory.open(db) as history:
        await history.record(mood("ann", timedelta(days=10), now))
        await history.record(mood("ann", timedelta(days=2), now))

    class Borrowed:
        def __getattr__(self, name: str) -> Any:
            return getattr(engine, name)

        def close(self) -> None:
            """The session's engine stays open."""

        async def aclose(self) -> None:
            """open_service closes the engine with aclose(): that too leaves it open."""

    monkeypatch.setattr(app.EmotionEngine, "load", staticmethod(lambda *args: Borrowed()))
    settings = load_settings(MOODBOT_DB=db, MOODBOT_RETENTION_DAYS=7)
    async with open_service(settings) as service:
        await wait_until(lambda: _fewer_than(service.history, 2))
        assert await ages_in_days(service.history, "ann", now=now) == [2]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "moodbot-retention"]


async def _fewer_than(history: AsyncHistory, count: int) -> bool:
    entries = [e for user in ("ann", "bo") for e in await history.recent("telegram", user, 100)]
    return len(entries) < count
