"""PostgreSQL-only history behaviour against a real server: migrations, locks, outages.

The behaviour both backends share is tested in tests/test_history_backends.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bot.history import HistoryUnavailable, MoodEntry, open_history
from bot.history_pg import MIGRATIONS, RETENTION_LOCK, PostgresHistory, redacted_url
from tests.servers import PostgresServer, free_port, postgres_server

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def entry(minutes: int = 0, user_id: str = "u1") -> MoodEntry:
    return MoodEntry("telegram", "c1", user_id, "happy", 0.9, 1, T0 + timedelta(minutes=minutes))


def ledger(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, name FROM moodbot_migrations ORDER BY id").fetchall()


# --- migrations ----------------------------------------------------------------------------------


async def test_migrations_are_numbered_applied_once_and_not_again(postgres_url: str) -> None:
    history = await PostgresHistory.open(postgres_url)
    try:
        expected = [(number, name) for number, (name, _) in enumerate(MIGRATIONS, start=1)]
        assert ledger(postgres_url) == expected
        assert await history.migrate() == []  # nothing pending the second time
    finally:
        await history.aclose()


MIGRATE_SCRIPT = """
import asyncio, json, logging, sys
from bot.history_pg import PostgresHistory

applied = []
class Keep(logging.Handler):
    def emit(self, record):
        applied.append(record.getMessage())
logging.getLogger("bot.history_pg").addHandler(Keep())
logging.getLogger("bot.history_pg").setLevel(logging.INFO)

async def main():
    history = await PostgresHistory.open(sys.argv[1])  # migrates
    await history.aclose()

print("ready", flush=True)
sys.stdin.readline()  # "go": every process opens the empty database at the same instant
asyncio.run(main())
print(json.dumps([m for m in applied if m.startswith("PostgreSQL history: applied")]))
"""


def test_four_processes_migrating_an_empty_database_apply_each_step_once(
    postgres_url: str,
) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_SCRIPT, postgres_url],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for process in processes:
            assert process.stdout and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = []
        for process in processes:
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for process in processes:
            process.kill()
    # Exactly one process applied the steps (they were all pending), the others none.
    names = ", ".join(name for name, _ in MIGRATIONS)
    assert [messages for messages in outputs if messages] == [
        [f"PostgreSQL history: applied {names}"]
    ]
    assert [name for _, name in ledger(postgres_url)] == [name for name, _ in MIGRATIONS]


# --- retention in one replica at a time ----------------------------------------------------------


async def test_retention_skips_while_another_replica_holds_the_lock(postgres_url: str) -> None:
    history = await PostgresHistory.open(postgres_url)
    try:
        await history.record(entry(minutes=-600))
        await history.record(entry(minutes=0))
        with psycopg.connect(postgres_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", [RETENTION_LOCK])
            assert await history.delete_older_than(T0 - timedelta(hours=1)) == 0
            other.execute("SELECT pg_advisory_unlock(%s)", [RETENTION_LOCK])
        assert await history.delete_older_than(T0 - timedelta(hours=1)) == 1
        assert len(await history.recent("telegram", "u1")) == 1
    finally:
        await history.aclose()


# --- outages -------------------------------------------------------------------------------------


def test_a_password_never_shows() -> None:
    assert redacted_url("postgresql://bot:s3cret@db:5432/moods") == (
        "postgresql://bot:***@db:5432/moods"
    )
    assert redacted_url("postgresql://bot@db/moods") == "postgresql://bot@db/moods"


async def test_an_unreachable_server_fails_fast_and_politely() -> None:
    url = f"postgresql://bot:s3cret@127.0.0.1:{free_port()}/moods"
    started = time.monotonic()
    with pytest.raises(HistoryUnavailable) as caught:
        await open_history(url, timeout_s=1.0)
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(caught.value)


async def recovered(call, within_s: float) -> None:
    """Repeat `call` until it stops raising HistoryUnavailable, at most `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            await call()
            return
        except HistoryUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
def own_postgres(postgres: PostgresServer):
    """A private server of this test's own, to stop and restart without disturbing others."""
    if not postgres.private:
        pytest.skip("stopping the server needs the private one, not MOODBOT_TEST_POSTGRES_URL")
    with postgres_server() as server:
        yield server


async def test_stopped_server_is_unavailable_then_recovers(own_postgres: PostgresServer) -> None:
    url = own_postgres.create_database()
    history = await PostgresHistory.open(url, timeout_s=1.0)
    try:
        await history.record(entry())
        await asyncio.to_thread(own_postgres.stop)
        with pytest.raises(HistoryUnavailable):
            await history.record(entry(minutes=1))
        with pytest.raises(HistoryUnavailable):
            await history.recent("telegram", "u1")
        assert await history.probe() is not None  # /healthz says so
        await asyncio.to_thread(own_postgres.start)
        # The pool throws away its dead connections and makes new ones: no restart needed,
        # though its reconnection may take a moment (bounded here) on a busy machine.
        await recovered(lambda: history.record(entry(minutes=2)), within_s=20)
        assert len(await history.recent("telegram", "u1")) == 2
        assert await history.probe() is None
    finally:
        await history.aclose()


# --- moodbot db copy -----------------------------------------------------------------------------

MOODBOT = str(Path(sys.executable).with_name("moodbot"))


def db_copy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MOODBOT, "db", "copy", *args, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_db_copy_moves_everything_once_and_reports_counts(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_file = tmp_path / "moods.db"
    async with await open_history(sqlite_file) as source:
        rows = [await source.record(entry(minutes=i, user_id=f"u{i % 3}")) for i in range(7)]
        await source.forget_user("telegram", "u0")  # leaves a gap in the ids
        await source.correct_mood(
            rows[1], "telegram", "u1", "sad", since=T0 - timedelta(days=1), at=T0
        )
        await source.set_preferences("telegram", "u1", mode="calm", genre="jazz")
        await source.remember_tracks("telegram", "u1", ["t1", "t2"], T0)
        expected = {user: await source.recent("telegram", user) for user in ("u1", "u2")}

    first = db_copy(str(sqlite_file), postgres_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {
        "moods_copied": 4, "moods_present": 0, "preferences_copied": 1, "preferences_present": 0,
        "tracks_copied": 2, "tracks_present": 0,
    }  # fmt: skip
    again = db_copy(str(sqlite_file), postgres_url)
    assert json.loads(again.stdout) == {
        "moods_copied": 0, "moods_present": 4, "preferences_copied": 0, "preferences_present": 1,
        "tracks_copied": 0, "tracks_present": 2,
    }  # fmt: skip

    async with await open_history(postgres_url) as target:
        for user, entries in expected.items():
            copied = await target.recent("telegram", user)
            assert copied == entries and [e.id for e in copied] == [e.id for e in entries]
        assert (await target.recent("telegram", "u1"))[-1].predicted == "happy"
        assert (await target.get_preferences("telegram", "u1")).genre == "jazz"
        assert await target.recent_track_ids("telegram", "u1", 5) == ["t2", "t1"]
        await target.remember_tracks("telegram", "u1", ["t3"], T0)  # ids go on after the copy
        # New ids go on after the copied ones (the identity would collide at 1 otherwise).
        new_id = await target.record(entry(minutes=99))
        assert new_id > max(e.id or 0 for entries in expected.values() for e in entries)


async def test_db_copy_refuses_a_database_holding_other_moods(
    tmp_path: Path, postgres_url: str
) -> None:
    async with await open_history(postgres_url) as target:
        await target.record(entry(minutes=500, user_id="stranger"))
    sqlite_file = tmp_path / "moods.db"
    async with await open_history(sqlite_file) as source:
        await source.record(entry())
    refused = db_copy(str(sqlite_file), postgres_url)
    assert refused.returncode == 1
    assert "is not the file's" in refused.stderr
    missing = db_copy(str(tmp_path / "nothing.db"), postgres_url)
    assert missing.returncode == 1 and "no SQLite history" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()


async def test_the_postgres_schema_has_no_room_for_images(postgres_url: str) -> None:
    await (await PostgresHistory.open(postgres_url)).aclose()
    with psycopg.connect(postgres_url) as conn:
        binary = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('bytea', 'oid')"
        ).fetchall()
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            " ORDER BY 1"
        ).fetchall()
    assert binary == []
    assert [t for (t,) in tables] == [
        "moodbot_migrations", "moods", "preferences", "recommended_tracks", "telegram_inbox",
    ]  # fmt: skip
