"""The mood history under a killed process, a read-only file and a full disk.

A real child process writes through the real AsyncHistory until it is SIGKILLed; the file
must then pass SQLite's integrity check and hold only whole, valid rows, and every write the
child saw committed. A read-only or full database must give a clear log line and a kind
reply while the bot goes on reading moods.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.core import MoodService, Sender
from bot.history import AsyncHistory, HistoryStore, HistoryUnavailable, MoodEntry
from bot.music import MusicRecommender
from ml.engine import EmotionEngine

REPO_ROOT = Path(__file__).resolve().parents[1]
EMOTIONS = ("happy", "sad", "angry", "anxious", "hurt", "neutral", "fear", "disgust", "surprise")
T0 = datetime(2026, 5, 1, tzinfo=UTC)
BATCH = 25

# Row n of a round is fully determined by (round, n), so every column can be checked.
WRITER = f"""
import asyncio, sys
from datetime import UTC, datetime, timedelta
from bot.history import AsyncHistory, MoodEntry

EMOTIONS = {EMOTIONS!r}
T0 = datetime(2026, 5, 1, tzinfo=UTC)

def entry(round_: int, n: int) -> MoodEntry:
    return MoodEntry("telegram", f"r{{round_}}-{{n}}", f"user-{{n % 50}}", EMOTIONS[n % 9],
                     (n % 1000) / 1000, 1 + n % 3, T0 + timedelta(milliseconds=n))

async def main(path: str, round_: int) -> None:
    history = await AsyncHistory.open(path)
    n = 0
    while n < 1_000_000:  # bounded, but the parent kills it long before
        batch = [history.record(entry(round_, n + i)) for i in range({BATCH})]
        await asyncio.gather(*batch)
        await history.set_preferences("telegram", f"user-{{n % 50}}", genre=f"g{{n}}")
        n += {BATCH}
        print(n, flush=True)  # everything below n is committed

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def expected_row(round_: int, n: int) -> tuple:
    return (
        "telegram",
        f"r{round_}-{n}",
        f"user-{n % 50}",
        EMOTIONS[n % 9],
        (n % 1000) / 1000,
        1 + n % 3,
        (T0 + timedelta(milliseconds=n)).isoformat(timespec="microseconds"),
    )


def write_until_killed(path: Path, round_: int, kill_after: int) -> int:
    """Run the writer, SIGKILL it once `kill_after` rows are committed; the last count seen."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(round_)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    committed, deadline = 0, time.monotonic() + 60
    try:
        while committed < kill_after:
            ready, _, _ = select.select([child.stdout], [], [], deadline - time.monotonic())
            line = child.stdout.readline() if ready else ""
            assert line, f"the writer stopped or stalled after {committed} rows"
            committed = int(line)
        os.kill(child.pid, signal.SIGKILL)  # while it goes on writing the next batch
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    return committed


def rows_of_round(path: Path, round_: int) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT platform, chat_id, user_id, emotion, confidence, face_count, created_at"
            " FROM moods WHERE chat_id LIKE ? ORDER BY id",
            (f"r{round_}-%",),
        ).fetchall()
    finally:
        conn.close()


def pragma(path: Path, name: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchall()
    finally:
        conn.close()


def test_sigkill_during_heavy_writes_leaves_a_sound_database(tmp_path: Path) -> None:
    path = tmp_path / "moods.db"
    kills = []
    for round_, kill_after in enumerate((250, 600, 1000)):
        committed = write_until_killed(path, round_, kill_after)
        assert pragma(path, "integrity_check") == [("ok",)]
        rows = rows_of_round(path, round_)
        # Whole rows only, each exactly as written, in order, none missing, none twice; and
        # every batch the writer saw committed survived the kill.
        assert rows == [expected_row(round_, n) for n in range(len(rows))]
        assert len(rows) >= committed
        kills.append((committed, len(rows)))
    # The next writer reopened the killed file every time (WAL recovery) and went on.
    assert pragma(path, "journal_mode") == [("wal",)]
    with HistoryStore(path) as store:
        store.record(MoodEntry("telegram", "after", "after", "happy", 1.0, 1, T0))
        assert [e.chat_id for e in store.recent("telegram", "after")] == ["after"]
    print(f"SIGKILL rounds (committed seen, rows found): {kills}")


# --- read-only and full: a kind reply, and analyses go on -----------------------------------------

ALICE = Sender("telegram", "1001", "1001")
SAVED_NOT = "(I couldn't save this to your history just now.)"


def an_old_mood(n: int = 0) -> MoodEntry:
    """Alice's mood yesterday: older than any the service records, in the same chat."""
    yesterday = datetime.now(UTC) - timedelta(days=1)
    return MoodEntry(
        "telegram", "1001", "1001", "sad", (n % 100) / 100, 1, yesterday + timedelta(seconds=n)
    )


async def assert_serves_without_saving(
    service: MoodService, caplog: pytest.LogCaptureFixture, reason: str, *photos: bytes
) -> None:
    for photo in photos:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            reply = await service.analyze_selfie(ALICE, photo)
        assert reply.ok and reply.analysis and reply.links  # the analysis and the music
        assert reply.text.endswith(SAVED_NOT)
        (line,) = [r for r in caplog.records if r.message.startswith("Could not save a mood")]
        assert line.levelno == logging.ERROR and reason in line.message
    history = await service.show_history(ALICE)  # reading still works
    assert history.ok and history.text.startswith("Your last ")
    assert history.chart_png


@pytest.mark.slow
async def test_read_only_database_gets_a_kind_reply(
    tmp_path: Path,
    engine: EmotionEngine,
    caplog: pytest.LogCaptureFixture,
    astronaut_jpeg: bytes,
    grace_hopper_jpeg: bytes,
) -> None:
    path = tmp_path / "moods.db"
    with HistoryStore(path) as store:
        store.record(an_old_mood())
    # Root ignores file modes; SQLite's read-only open is what a read-only mount amounts to.
    history = await AsyncHistory.open(path, read_only=True)
    try:
        service = MoodService(engine, MusicRecommender(None), history)
        await assert_serves_without_saving(
            service, caplog, "(SQLITE_READONLY)", astronaut_jpeg, grace_hopper_jpeg
        )
        mode = await service.set_mode(ALICE, "calm")
        assert mode.error_code == "history_unavailable"
        assert mode.text == "Your history is not available right now. Please try again later."
    finally:
        await history.aclose()
    assert len(rows_of_round(path, 0)) == 0 and pragma(path, "integrity_check") == [("ok",)]


@pytest.mark.slow
async def test_full_disk_gets_a_kind_reply(
    tmp_path: Path,
    engine: EmotionEngine,
    caplog: pytest.LogCaptureFixture,
    astronaut_jpeg: bytes,
    grace_hopper_jpeg: bytes,
) -> None:
    path = tmp_path / "moods.db"
    HistoryStore(path).close()
    pages = pragma(path, "page_count")[0][0]
    history = await AsyncHistory.open(path, max_pages=pages)  # the disk has no room left
    try:
        # Fill what room the last pages still had. The service's rows sort after these in
        # every index, so they need the very pages that are full now.
        with pytest.raises(HistoryUnavailable, match="SQLITE_FULL"):
            for n in range(5000):
                await history.record(an_old_mood(n))
        assert n > 0
        service = MoodService(engine, MusicRecommender(None), history)
        await assert_serves_without_saving(
            service,
            caplog,
            "database or disk is full (SQLITE_FULL)",
            astronaut_jpeg,
            grace_hopper_jpeg,
        )
    finally:
        await history.aclose()
    assert pragma(path, "integrity_check") == [("ok",)]
