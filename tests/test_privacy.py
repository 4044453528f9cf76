"""Privacy promises: photos stay in memory, /forget forgets everywhere, nobody reads anyone else.

A Python audit hook (PEP 578) sees every file the process opens for writing, renames, copies
or creates, on every thread (the engine's and the database's included): while analyses run,
the only files written are the SQLite database and its -wal/-shm/-journal companions.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.chart import render_mood_chart
from bot.core import MoodService, Sender
from bot.history import AsyncHistory, MoodEntry
from bot.music import MusicRecommender
from ml.engine import EmotionEngine

pytestmark = pytest.mark.slow

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_WRITE_EVENTS = {
    "os.rename",
    "os.replace",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.mkdir",
    "shutil.copyfile",
    "shutil.copymode",
    "shutil.copystat",
    "shutil.copytree",
    "shutil.move",
    "shutil.make_archive",
    "tempfile.mkstemp",
    "tempfile.mkdtemp",
    "sqlite3.connect",
}
_recording: list[tuple[str, str]] | None = None
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Runs for every audited event of the whole process: cheap, and never raises.
    recording = _recording
    if recording is None:
        return
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else False
        if mode is None and isinstance(flags, int):
            writes = bool(flags & _WRITE_FLAGS)
        if writes:
            recording.append((event, str(path)))
    elif event in _WRITE_EVENTS:
        recording.append((event, str(args[0]) if args else ""))


@contextmanager
def writes_recorded() -> Iterator[list[tuple[str, str]]]:
    """Every write-like file operation of the process while the block runs."""
    global _recording, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # audit hooks cannot be removed: it idles when not recording
        _hook_installed = True
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None


def is_database_file(path: str, db: Path) -> bool:
    return path in {str(db), *(f"{db}{suffix}" for suffix in ("-wal", "-shm", "-journal"))}


IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF")


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    return MoodService(engine, MusicRecommender(None), history)


def who(user: str, chat: str, platform: str = "telegram") -> Sender:
    return Sender(platform, chat, user)


# --- photos in memory only ------------------------------------------------------------------------


async def test_analyses_write_nothing_but_the_database(
    service: MoodService,
    history: AsyncHistory,
    astronaut_jpeg: bytes,
    group_photo: bytes,
    no_face_png: bytes,
) -> None:
    db = history.path
    # Matplotlib writes its font cache on first use: let that happen before recording.
    render_mood_chart([MoodEntry("telegram", "c", "u", "happy", 0.9, 1, datetime.now(UTC))])
    with writes_recorded() as writes:
        alice = who("alice", "group-1")
        assert (await service.analyze_selfie(alice, astronaut_jpeg)).ok
        assert (await service.analyze_selfie(who("bob", "group-1"), group_photo)).ok
        assert (await service.analyze_selfie(alice, no_face_png)).error_code == "no_face"
        assert (await service.group_photo_mix(alice, group_photo)).ok
        history_reply = await service.show_history(alice)
        assert history_reply.chart_png  # the chart is built in memory and sent from there
        assert (await service.group_mix(alice)).ok
    # SQLite writes from C, past the hook; anything Python opens for writing shows up here.
    assert all(is_database_file(path, db) for _, path in writes), writes
    assert sorted(p.name for p in db.parent.iterdir()) == sorted(
        name
        for name in (db.name, f"{db.name}-wal", f"{db.name}-shm")
        if (db.parent / name).exists()
    )

    stored = b"".join(
        Path(f"{db}{suffix}").read_bytes()
        for suffix in ("", "-wal", "-shm")
        if Path(f"{db}{suffix}").exists()
    )
    for magic in IMAGE_MAGIC:
        assert magic not in stored
    for photo in (astronaut_jpeg, group_photo):
        middle = len(photo) // 2
        assert photo[middle : middle + 32] not in stored


async def test_the_audit_hook_would_see_a_photo_saved_to_disk(
    tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    """The check above can fail: a file written the usual ways is recorded."""
    with writes_recorded() as writes:
        (tmp_path / "leak.jpg").write_bytes(astronaut_jpeg)
        os.replace(tmp_path / "leak.jpg", tmp_path / "moved.jpg")
        fd = os.open(tmp_path / "raw.jpg", os.O_WRONLY | os.O_CREAT)
        os.close(fd)
    paths = [path for _, path in writes]
    assert str(tmp_path / "leak.jpg") in paths and str(tmp_path / "raw.jpg") in paths
    assert ("os.rename", str(tmp_path / "leak.jpg")) in writes  # os.replace audits as rename


async def test_the_schema_has_no_room_for_images(history: AsyncHistory) -> None:
    with sqlite3.connect(history.path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        columns = {
            table: {row[1]: row[2].upper() for row in db.execute(f"PRAGMA table_info('{table}')")}
            for table in tables
        }
    assert columns["moods"] == {
        "id": "INTEGER",
        "platform": "TEXT",
        "chat_id": "TEXT",
        "user_id": "TEXT",
        "emotion": "TEXT",
        "confidence": "REAL",
        "face_count": "INTEGER",
        "created_at": "TEXT",
        "predicted": "TEXT",  # the model's reading, once the person corrected it
        "corrected_at": "TEXT",
        "request_id": "TEXT",  # e.g. telegram:<update_id>, so that a redelivery is stored once
    }
    assert columns["preferences"] == {
        "platform": "TEXT",
        "user_id": "TEXT",
        "mode": "TEXT",
        "genre": "TEXT",
    }
    assert columns["recommended_tracks"] == {
        "id": "INTEGER",
        "platform": "TEXT",
        "user_id": "TEXT",
        "track_id": "TEXT",
        "created_at": "TEXT",
    }
    for table, types in columns.items():
        assert "BLOB" not in types.values() and "" not in types.values(), table


async def test_no_stored_value_is_long(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    await service.analyze_selfie(who("alice", "c1"), astronaut_jpeg)
    await service.set_genre(who("alice", "c1"), "hip hop")
    with sqlite3.connect(history.path) as db:
        for table in ("moods", "preferences", "recommended_tracks"):
            for row in db.execute(f"SELECT * FROM {table}"):
                assert all(len(str(value)) <= 64 for value in row), row


# --- /forget --------------------------------------------------------------------------------------


def raw_rows(db: Path, sql: str, *params: str) -> list[tuple[Any, ...]]:
    """Read the file itself, not through the code under test."""
    with sqlite3.connect(db) as connection:
        return list(connection.execute(sql, params))


async def test_forget_from_one_chat_removes_the_user_from_every_chat(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes, grace_hopper_jpeg: bytes
) -> None:
    for chat in ("private-1", "group-1", "group-2"):
        assert (await service.analyze_selfie(who("alice", chat), astronaut_jpeg)).ok
    await service.analyze_selfie(who("bob", "group-1"), grace_hopper_jpeg)
    await service.analyze_selfie(who("alice", "dm-9", platform="discord"), astronaut_jpeg)
    await service.set_mode(who("alice", "group-2"), "calm")
    await service.set_mode(who("bob", "group-1"), "lift")

    db = history.path
    offered = (
        "SELECT platform, user_id, COUNT(*) FROM recommended_tracks GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert raw_rows(db, offered) == [
        ("discord", "alice", 5),
        ("telegram", "alice", 15),
        ("telegram", "bob", 5),
    ]

    reply = await service.forget(who("alice", "group-2"))
    assert reply.ok and "3" in reply.text

    users = raw_rows(db, "SELECT platform, user_id, chat_id FROM moods ORDER BY platform")
    assert users == [("discord", "alice", "dm-9"), ("telegram", "bob", "group-1")]
    prefs = raw_rows(db, "SELECT platform, user_id, mode FROM preferences")
    assert prefs == [("telegram", "bob", "lift")]
    # The recommendation memory went too: alice's next answers may bring any track again.
    assert raw_rows(db, offered) == [("discord", "alice", 5), ("telegram", "bob", 5)]
    assert await history.recent_track_ids("telegram", "alice", 50) == []
    assert (await service.show_history(who("alice", "private-1"))).text.startswith("No moods yet")


# --- nobody reads anyone else -------------------------------------------------------------------


async def test_history_shows_only_the_askers_own_moods(
    service: MoodService, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    now = datetime.now(UTC)
    for minutes, emotion in [(5, "sad"), (4, "angry"), (3, "fear")]:
        await history.record(
            MoodEntry(
                "telegram", "group-1", "bob", emotion, 0.8, 1, now - timedelta(minutes=minutes)
            )
        )
    await service.analyze_selfie(who("alice", "group-1"), astronaut_jpeg)
    reply = await service.show_history(who("alice", "group-1"), 50)
    assert reply.text.splitlines()[0] == "Your last 1 moods:"
    for emotion in ("sad", "angry", "fear"):
        assert emotion not in reply.text
    bob = await service.show_history(who("bob", "group-1"), 50)
    assert bob.text.splitlines()[0] == "Your last 3 moods:" and "happy" not in bob.text


async def test_group_mix_counts_only_members_who_used_the_bot_in_that_chat(
    service: MoodService, history: AsyncHistory
) -> None:
    now = datetime.now(UTC)
    entries = [
        ("group-1", "alice", "happy"),
        ("group-1", "bob", "happy"),
        ("group-2", "carol", "sad"),  # another chat: not part of group-1's mix
        ("private-carol", "carol", "angry"),
    ]
    for chat, user, emotion in entries:
        await history.record(MoodEntry("telegram", chat, user, emotion, 0.9, 1, now))
    await history.record(MoodEntry("discord", "group-1", "dave", "fear", 0.9, 1, now))

    mix = await service.group_mix(who("alice", "group-1"))
    assert mix.text.startswith("Group mix for 2 people: happy 😄 100%.")
    for private in ("sad", "angry", "fear", "carol", "dave", "alice", "bob"):
        assert private not in mix.text  # moods of other chats and names never appear

    outsider = await service.group_mix(who("erin", "group-3"))
    assert outsider.error_code == "group_empty"
