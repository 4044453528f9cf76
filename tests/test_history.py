"""Mood history against real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.history import (
    AsyncHistory,
    HistoryStore,
    HistoryUnavailable,
    MoodEntry,
    Preferences,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def mood(
    emotion: str = "happy",
    *,
    minutes: int = 0,
    user_id: str = "u1",
    chat_id: str = "c1",
    platform: str = "telegram",
    confidence: float = 0.9,
    face_count: int = 1,
) -> MoodEntry:
    return MoodEntry(
        platform=platform,
        chat_id=chat_id,
        user_id=user_id,
        emotion=emotion,
        confidence=confidence,
        face_count=face_count,
        created_at=T0 + timedelta(minutes=minutes),
    )


def raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the file with plain sqlite3, independently of HistoryStore."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "moods.db"


@pytest.fixture
def store(path: Path):
    with HistoryStore(path) as store:
        yield store


# --- schema --------------------------------------------------------------------------------------


def test_migrations_apply_to_a_fresh_file_and_not_again(path: Path) -> None:
    HistoryStore(path).close()
    sql = "SELECT id, migration_set, name FROM _sqlite_migrations ORDER BY id"
    first = raw(path, "SELECT * FROM _sqlite_migrations ORDER BY id")
    assert raw(path, sql) == [
        (1, "moodbot", "m001_create_moods"),
        (2, "moodbot", "m002_create_preferences"),
        (3, "moodbot", "m003_mood_corrections"),
        (4, "moodbot", "m004_mood_request_ids"),
        (5, "moodbot", "m005_create_recommended_tracks"),
    ]
    HistoryStore(path).close()
    HistoryStore(path).close()
    assert raw(path, "SELECT * FROM _sqlite_migrations ORDER BY id") == first


def test_file_is_in_wal_mode(store: HistoryStore, path: Path) -> None:
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]


def test_schema_columns(store: HistoryStore, path: Path) -> None:
    # (name, type, not null, primary key position)
    columns = 'SELECT name, type, "notnull", pk FROM pragma_table_info(?) ORDER BY cid'
    assert raw(path, columns, ("moods",)) == [
        ("id", "INTEGER", 0, 1),
        ("platform", "TEXT", 1, 0),
        ("chat_id", "TEXT", 1, 0),
        ("user_id", "TEXT", 1, 0),
        ("emotion", "TEXT", 1, 0),
        ("confidence", "REAL", 1, 0),
        ("face_count", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
        ("predicted", "TEXT", 0, 0),
        ("corrected_at", "TEXT", 0, 0),
        ("request_id", "TEXT", 0, 0),
    ]
    assert raw(path, columns, ("preferences",)) == [
        ("platform", "TEXT", 1, 1),
        ("user_id", "TEXT", 1, 2),
        ("mode", "TEXT", 1, 0),
        ("genre", "TEXT", 0, 0),
    ]
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'moods'"
    assert sorted(raw(path, indexes)) == [
        ("idx_moods_chat_time",),
        ("idx_moods_request",),
        ("idx_moods_time",),
        ("idx_moods_user_time",),
    ]


def test_schema_has_no_place_for_images(store: HistoryStore, path: Path) -> None:
    tables = [name for (name,) in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")]
    assert sorted(tables) == ["_sqlite_migrations", "moods", "preferences", "recommended_tracks"]
    columns = [
        (table, name, kind)
        for table in tables
        for name, kind in raw(path, "SELECT name, type FROM pragma_table_info(?)", (table,))
    ]
    # A BLOB column, or one without a type (which would accept anything), could hold a photo.
    assert [c for c in columns if c[2].upper() in ("BLOB", "")] == []
    names = " ".join(name for _, name, _ in columns)
    assert not any(word in names for word in ("image", "photo", "picture", "selfie", "blob"))


def test_history_imports_no_chat_library_nor_ml() -> None:
    # ml.labels is a plain table (the music modes live there): no model, no TensorFlow.
    code = (
        "import sys, bot.history; "
        "bad = [m for m in sys.modules if m.split('.')[0] in"
        " ('telegram', 'discord', 'ml', 'tensorflow', 'keras') and m not in ('ml', 'ml.labels')]; "
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"


# --- record / recent -----------------------------------------------------------------------------


def test_record_stores_exactly_the_entry(store: HistoryStore, path: Path) -> None:
    berlin = timezone(timedelta(hours=2))
    entry = MoodEntry(
        "discord", "g1", "42", "sad", 0.25, 2, datetime(2026, 5, 1, 14, tzinfo=berlin)
    )
    assert store.record(entry) == 1
    assert raw(path, "SELECT * FROM moods") == [
        (
            1,
            "discord",
            "g1",
            "42",
            "sad",
            0.25,
            2,
            "2026-05-01T12:00:00.000000+00:00",
            None,
            None,
            None,
        )
    ]
    assert store.recent("discord", "42") == [
        MoodEntry("discord", "g1", "42", "sad", 0.25, 2, datetime(2026, 5, 1, 12, tzinfo=UTC))
    ]


def test_recent_is_newest_first_and_per_user(store: HistoryStore) -> None:
    store.record(mood("sad", minutes=10))
    store.record(mood("happy", minutes=30))
    store.record(mood("angry", minutes=20))
    store.record(mood("fear", minutes=40, user_id="u2"))
    store.record(mood("calm", minutes=50, platform="discord"))
    assert [e.emotion for e in store.recent("telegram", "u1")] == ["happy", "angry", "sad"]
    assert [e.emotion for e in store.recent("telegram", "u1", limit=2)] == ["happy", "angry"]
    assert [e.emotion for e in store.recent("telegram", "u2")] == ["fear"]
    assert store.recent("telegram", "nobody") == []


def test_recent_same_instant_keeps_insertion_order(store: HistoryStore) -> None:
    store.record(mood("sad"))
    store.record(mood("happy"))
    assert [e.emotion for e in store.recent("telegram", "u1")] == ["happy", "sad"]


def test_recent_limit_is_capped(store: HistoryStore) -> None:
    for minute in range(105):
        store.record(mood(minutes=minute))
    entries = store.recent("telegram", "u1", limit=1000)
    assert (len(entries), entries[0].created_at) == (100, T0 + timedelta(minutes=104))


@pytest.mark.parametrize("limit", [0, -3, 2.5, True])
def test_recent_rejects_a_bad_limit(store: HistoryStore, limit: object) -> None:
    with pytest.raises(ValueError, match=f"got {limit!r}"):
        store.recent("telegram", "u1", limit=limit)  # type: ignore[arg-type]


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("emotion", "", "emotion must be a non-empty string, got ''"),
        ("emotion", "  ", "emotion must be a non-empty string, got '  '"),
        ("confidence", 1.5, "confidence must be a number in [0, 1], got 1.5"),
        ("confidence", -0.1, "confidence must be a number in [0, 1], got -0.1"),
        ("confidence", float("nan"), "confidence must be a number in [0, 1], got nan"),
        ("confidence", "0.5", "confidence must be a number in [0, 1], got '0.5'"),
        ("face_count", 0, "face_count must be an integer >= 1, got 0"),
        ("face_count", 1.0, "face_count must be an integer >= 1, got 1.0"),
        (
            "created_at",
            datetime(2026, 5, 1, 12),
            "created_at must be a timezone-aware datetime,"
            " got datetime.datetime(2026, 5, 1, 12, 0)",
        ),
        ("platform", "Telegram", "got 'Telegram'"),
        ("user_id", 42, "user_id must be a non-empty string, got 42"),
        ("chat_id", "", "chat_id must be a non-empty string, got ''"),
    ],
)
def test_record_rejects_bad_values(
    store: HistoryStore, path: Path, field: str, value: object, message: str
) -> None:
    fields = vars(mood()) | {field: value}
    with pytest.raises(ValueError) as caught:
        store.record(MoodEntry(**fields))
    assert message in str(caught.value)
    assert raw(path, "SELECT COUNT(*) FROM moods") == [(0,)]


def test_windows_need_aware_datetimes(store: HistoryStore) -> None:
    naive = datetime(2026, 5, 1)
    with pytest.raises(ValueError, match="since must be a timezone-aware datetime"):
        store.mood_counts("telegram", "u1", since=naive)
    with pytest.raises(ValueError, match="since must be a timezone-aware datetime"):
        store.chat_latest_moods("telegram", "c1", since=naive)
    with pytest.raises(ValueError, match="cutoff must be a timezone-aware datetime"):
        store.delete_older_than(naive)


# --- aggregates ----------------------------------------------------------------------------------


def test_mood_counts_ordered_by_count_then_name(store: HistoryStore) -> None:
    for emotion, minutes in [
        ("sad", 10),
        ("happy", 11),
        ("angry", 12),
        ("happy", 13),
        ("sad", 14),
        ("neutral", 15),
        ("sad", 16),
        ("fear", -60),  # before the window
    ]:
        store.record(mood(emotion, minutes=minutes))
    store.record(mood("calm", minutes=20, user_id="u2"))
    counts = store.mood_counts("telegram", "u1", since=T0)
    assert list(counts.items()) == [("sad", 3), ("happy", 2), ("angry", 1), ("neutral", 1)]
    assert store.mood_counts("telegram", "u1", since=T0 - timedelta(hours=2)) == {
        "sad": 3,
        "happy": 2,
        "angry": 1,
        "fear": 1,
        "neutral": 1,
    }
    assert store.mood_counts("telegram", "u1", since=T0 + timedelta(days=1)) == {}


def test_window_start_is_inclusive(store: HistoryStore) -> None:
    store.record(mood("sad", minutes=0))
    assert store.mood_counts("telegram", "u1", since=T0) == {"sad": 1}
    later = T0 + timedelta(microseconds=1)
    assert store.mood_counts("telegram", "u1", since=later) == {}


def test_chat_latest_moods_one_entry_per_member(store: HistoryStore) -> None:
    store.record(mood("sad", minutes=1, user_id="ann"))
    store.record(mood("happy", minutes=5, user_id="ann"))
    store.record(mood("angry", minutes=3, user_id="bob"))
    store.record(mood("calm", minutes=-90, user_id="cyd"))  # outside the window
    store.record(mood("fear", minutes=9, user_id="ann", chat_id="c2"))  # another chat
    store.record(mood("fear", minutes=9, user_id="dan", platform="discord"))
    latest = store.chat_latest_moods("telegram", "c1", since=T0 - timedelta(hours=1))
    assert latest == {
        "ann": mood("happy", minutes=5, user_id="ann"),
        "bob": mood("angry", minutes=3, user_id="bob"),
    }
    assert list(latest) == ["ann", "bob"]  # newest first
    assert store.chat_latest_moods("discord", "c1", since=T0) == {
        "dan": mood("fear", minutes=9, user_id="dan", platform="discord")
    }


# --- corrections ---------------------------------------------------------------------------------

LATER = T0 + timedelta(hours=1)
DAY_BEFORE = T0 - timedelta(hours=24)


def test_correct_mood_replaces_the_row_in_place_and_keeps_the_reading(
    store: HistoryStore, path: Path
) -> None:
    row = store.record(mood("happy"))
    before = store.correct_mood(row, "telegram", "u1", "sad", since=DAY_BEFORE, at=LATER)
    assert before == mood("happy")
    assert raw(path, "SELECT id, emotion, predicted, corrected_at FROM moods") == [
        (row, "sad", "happy", "2026-05-01T13:00:00.000000+00:00")
    ]
    (entry,) = store.recent("telegram", "u1")
    assert (entry.emotion, entry.predicted, entry.corrected, entry.id) == (
        "sad",
        "happy",
        True,
        row,
    )
    # A second correction keeps the model's reading; going back to it clears the mark.
    store.correct_mood(row, "telegram", "u1", "angry", since=DAY_BEFORE, at=LATER)
    assert raw(path, "SELECT emotion, predicted FROM moods") == [("angry", "happy")]
    store.correct_mood(row, "telegram", "u1", "happy", since=DAY_BEFORE, at=LATER)
    assert raw(path, "SELECT emotion, predicted, corrected_at FROM moods") == [
        ("happy", None, None)
    ]


@pytest.mark.parametrize(
    ("row_offset", "platform", "user_id", "since"),
    [
        (0, "telegram", "someone-else", DAY_BEFORE),
        (0, "discord", "u1", DAY_BEFORE),
        (1, "telegram", "u1", DAY_BEFORE),  # no such row (deleted)
        (0, "telegram", "u1", T0 + timedelta(minutes=1)),  # too old
    ],
    ids=["other-user", "other-platform", "missing-row", "too-old"],
)
def test_correct_mood_changes_nothing_it_may_not(
    store: HistoryStore, path: Path, row_offset: int, platform: str, user_id: str, since: datetime
) -> None:
    row = store.record(mood("happy"))
    assert (
        store.correct_mood(row + row_offset, platform, user_id, "sad", since=since, at=LATER)
        is None
    )
    assert raw(path, "SELECT emotion, predicted, corrected_at FROM moods") == [
        ("happy", None, None)
    ]


def test_correction_stats_count_analyses_corrections_and_the_matrix(store: HistoryStore) -> None:
    rows = [store.record(mood(e, minutes=i)) for i, e in enumerate(["happy"] * 4 + ["sad"] * 2)]
    store.record(mood("neutral", minutes=-3000))  # before the window
    for row, chosen in zip(rows[:3] + rows[4:5], ["sad", "sad", "neutral", "angry"], strict=True):
        store.correct_mood(row, "telegram", "u1", chosen, since=DAY_BEFORE, at=LATER)
    stats = store.correction_stats(since=T0 - timedelta(hours=1))
    assert (stats.analyses, stats.corrections) == (6, 4)
    assert stats.predicted == {"happy": 4, "sad": 2}
    assert stats.matrix == {("happy", "sad"): 2, ("happy", "neutral"): 1, ("sad", "angry"): 1}
    assert store.correction_stats().analyses == 7


def test_an_old_database_gains_the_correction_columns(path: Path) -> None:
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT,"
        " name TEXT, applied_at TEXT);"
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES"
        " ('moodbot', 'm001_create_moods', '2026'), ('moodbot', 'm002_create_preferences', '2026');"
        "CREATE TABLE moods (id INTEGER PRIMARY KEY, platform TEXT NOT NULL, chat_id TEXT NOT NULL,"
        " user_id TEXT NOT NULL, emotion TEXT NOT NULL, confidence FLOAT NOT NULL,"
        " face_count INTEGER NOT NULL, created_at TEXT NOT NULL);"
        "CREATE TABLE preferences (platform TEXT, user_id TEXT, mode TEXT NOT NULL DEFAULT 'match',"
        " genre TEXT, PRIMARY KEY (platform, user_id));"
        "INSERT INTO moods VALUES (1, 'telegram', 'c1', 'u1', 'sad', 0.5, 1,"
        " '2026-05-01T12:00:00.000000+00:00');"
    )
    conn.commit()
    conn.close()
    with HistoryStore(path) as store:
        assert store.recent("telegram", "u1") == [mood("sad", confidence=0.5)]
        store.correct_mood(1, "telegram", "u1", "happy", since=DAY_BEFORE, at=LATER)
        assert store.correction_stats().matrix == {("sad", "happy"): 1}


# --- deletion ------------------------------------------------------------------------------------


def test_forget_user_everywhere_on_that_platform_only(store: HistoryStore, path: Path) -> None:
    store.record(mood("sad", user_id="ann", chat_id="c1"))
    store.record(mood("happy", user_id="ann", chat_id="c2"))
    store.record(mood("calm", user_id="bob", chat_id="c1"))
    store.record(mood("fear", user_id="ann", platform="discord"))
    store.set_preferences("telegram", "ann", mode="lift", genre="jazz")
    store.set_preferences("discord", "ann", mode="calm")
    store.remember_tracks("telegram", "ann", ["track-a", "track-b"], T0)
    store.remember_tracks("discord", "ann", ["track-c"], T0)

    assert store.forget_user("telegram", "ann") == 2

    assert raw(path, "SELECT platform, chat_id, user_id, emotion FROM moods ORDER BY id") == [
        ("telegram", "c1", "bob", "calm"),
        ("discord", "c1", "ann", "fear"),
    ]
    assert raw(path, "SELECT platform, user_id, mode, genre FROM preferences") == [
        ("discord", "ann", "calm", None)
    ]
    assert store.get_preferences("telegram", "ann") == Preferences()
    assert raw(path, "SELECT platform, user_id, track_id FROM recommended_tracks") == [
        ("discord", "ann", "track-c")
    ]
    assert store.forget_user("telegram", "ann") == 0


def test_delete_older_than(store: HistoryStore) -> None:
    for minutes in (-120, -61, -60, 0, 30):
        store.record(mood(minutes=minutes))
        store.remember_tracks("telegram", "u1", [f"t{minutes}"], T0 + timedelta(minutes=minutes))
    assert store.delete_older_than(T0 - timedelta(minutes=60)) == 2
    assert store.recent_track_ids("telegram", "u1", 10) == ["t30", "t0", "t-60"]
    remaining = [e.created_at for e in store.recent("telegram", "u1")]
    assert remaining == [
        T0 + timedelta(minutes=30),
        T0,
        T0 - timedelta(minutes=60),
    ]


# --- the tracks offered, against repeats ---------------------------------------------------------


def test_track_memory_keeps_only_the_latest_per_user(
    store: HistoryStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.history.MAX_REMEMBERED_TRACKS", 3)
    store.remember_tracks("telegram", "u2", ["other"], T0)
    for minute in range(5):
        store.remember_tracks("telegram", "u1", [f"t{minute}"], T0 + timedelta(minutes=minute))

    assert raw(path, "SELECT track_id FROM recommended_tracks ORDER BY id") == [
        ("other",),
        ("t2",),
        ("t3",),
        ("t4",),
    ]


def test_remember_tracks_checks_its_input(store: HistoryStore) -> None:
    with pytest.raises(ValueError, match="platform"):
        store.remember_tracks("myspace", "u1", ["a"], T0)
    with pytest.raises(ValueError, match="track_id"):
        store.remember_tracks("telegram", "u1", [""], T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.remember_tracks("telegram", "u1", ["a"], datetime(2026, 1, 1))


# --- preferences ---------------------------------------------------------------------------------


def test_preferences_default_then_partial_updates(store: HistoryStore, path: Path) -> None:
    assert store.get_preferences("telegram", "u1") == Preferences(mode="match", genre=None)
    assert store.set_preferences("telegram", "u1", genre=" k-pop ") == Preferences("match", "k-pop")
    assert store.set_preferences("telegram", "u1", mode="lift") == Preferences("lift", "k-pop")
    assert store.set_preferences("telegram", "u1", genre=None) == Preferences("lift", None)
    assert store.set_preferences("telegram", "u1") == Preferences("lift", None)
    assert store.get_preferences("discord", "u1") == Preferences()
    store.close()
    with HistoryStore(path) as reopened:
        assert reopened.get_preferences("telegram", "u1") == Preferences("lift", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "happy"}, "mode must be one of ('match', 'lift', 'calm'), got 'happy'"),
        ({"genre": ""}, "genre must be a non-empty string, got ''"),
        ({"genre": 3}, "genre must be a non-empty string, got 3"),
    ],
)
def test_preferences_reject_bad_values(store: HistoryStore, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        store.set_preferences("telegram", "u1", **kwargs)
    assert str(caught.value) == message
    assert store.get_preferences("telegram", "u1") == Preferences()


# --- concurrency ---------------------------------------------------------------------------------

ROWS_PER_WRITER = 60
WRITER_SCRIPT = """
import sys
from datetime import UTC, datetime, timedelta
from bot.history import HistoryStore, MoodEntry

path, user_id, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = datetime(2026, 5, 1, tzinfo=UTC)
with HistoryStore(path) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go" so that every writer starts together
    for i in range(count):
        store.record(
            MoodEntry("console", "room", user_id, "happy", 0.5, 1, start + timedelta(seconds=i))
        )
"""


def _write_rows(path: Path, user_id: str, barrier: threading.Barrier) -> None:
    with HistoryStore(path) as store:
        barrier.wait(timeout=30)
        for i in range(ROWS_PER_WRITER):
            store.record(mood(user_id=user_id, chat_id="room", platform="console", minutes=i))


def test_threads_and_processes_write_at_once(path: Path) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(path), f"proc-{n}", str(ROWS_PER_WRITER)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        # Both processes opened the fresh file at the same time: migrations must not clash.
        assert [p.stdout.readline() for p in processes] == ["ready\n", "ready\n"]
        barrier = threading.Barrier(4 + 1)
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(_write_rows, path, f"thread-{n}", barrier) for n in range(4)]
            for process in processes:
                process.stdin.write("go\n")
                process.stdin.flush()
            barrier.wait(timeout=30)
            for future in futures:
                future.result()
        assert [p.wait(timeout=60) for p in processes] == [0, 0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.stdin.close()
            process.stdout.close()

    counts = raw(path, "SELECT user_id, COUNT(*) FROM moods GROUP BY user_id ORDER BY user_id")
    assert counts == [
        ("proc-0", 60),
        ("proc-1", 60),
        ("thread-0", 60),
        ("thread-1", 60),
        ("thread-2", 60),
        ("thread-3", 60),
    ]
    assert raw(path, "SELECT COUNT(DISTINCT id) FROM moods") == [(360,)]
    assert raw(path, "PRAGMA integrity_check") == [("ok",)]


def test_opening_waits_for_a_writer_that_holds_a_fresh_file(path: Path) -> None:
    # Another process mid-write on a file still in rollback mode: switching to WAL is then a
    # deadlock to SQLite, which answers SQLITE_BUSY at once without waiting (CI saw this when
    # two bots opened one fresh file). The store must wait for the writer, not give up.
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        writer.execute("CREATE TABLE other (a)")
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO other VALUES (1)")
        release = threading.Timer(0.3, writer.execute, ["COMMIT"])
        release.start()
        HistoryStore(path).close()
        release.join()
    finally:
        writer.close()
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(path, "SELECT a FROM other") == [(1,)]


def test_opening_gives_up_on_a_writer_that_never_finishes(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("CREATE TABLE other (a)")
        writer.execute("BEGIN IMMEDIATE")
        with pytest.raises(HistoryUnavailable, match="locked"):
            HistoryStore(path, busy_timeout_ms=200)
    finally:
        writer.close()


def test_many_threads_open_a_fresh_file_together(path: Path) -> None:
    barrier = threading.Barrier(8)

    def open_and_close() -> None:
        barrier.wait(timeout=30)
        HistoryStore(path).close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(open_and_close) for _ in range(8)]:
            future.result()
    assert raw(path, "SELECT name FROM _sqlite_migrations ORDER BY id") == [
        ("m001_create_moods",),
        ("m002_create_preferences",),
        ("m003_mood_corrections",),
        ("m004_mood_request_ids",),
        ("m005_create_recommended_tracks",),
    ]


def test_store_is_bound_to_its_thread(store: HistoryStore) -> None:
    # This is why AsyncHistory exists; misuse is a bug, not an outage.
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(store.recent, "telegram", "u1")
        with pytest.raises(sqlite3.ProgrammingError):
            future.result()


# --- AsyncHistory --------------------------------------------------------------------------------


def _db_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("moodbot-db")]


async def test_async_history_concurrent_records(path: Path) -> None:
    history = await AsyncHistory.open(path)
    # The loop runs here; the connection lives on the worker thread.
    assert not threading.current_thread().name.startswith("moodbot-db")
    assert _db_threads() == ["moodbot-db_0"]
    ids = await asyncio.gather(*(history.record(mood(minutes=i)) for i in range(50)))
    assert sorted(ids) == list(range(1, 51))
    recent = await history.recent("telegram", "u1", limit=3)
    assert [e.created_at for e in recent] == [T0 + timedelta(minutes=m) for m in (49, 48, 47)]
    assert await history.mood_counts("telegram", "u1", since=T0) == {"happy": 50}
    assert await history.chat_latest_moods("telegram", "c1", since=T0) == {"u1": mood(minutes=49)}
    await history.aclose()
    await history.aclose()
    assert _db_threads() == []
    assert raw(path, "SELECT COUNT(*) FROM moods") == [(50,)]


async def test_async_history_preferences_and_forget(path: Path) -> None:
    async with await AsyncHistory.open(path) as history:
        await history.record(mood())
        assert await history.set_preferences("web", "u1", mode="calm") == Preferences("calm")
        assert await history.get_preferences("web", "u1") == Preferences("calm")
        assert await history.forget_user("telegram", "u1") == 1
        assert await history.delete_older_than(T0) == 0
    assert _db_threads() == []


async def test_async_history_open_failure_leaves_no_thread(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database " * 200)
    with pytest.raises(HistoryUnavailable, match="file is not a database"):
        await AsyncHistory.open(corrupt)
    await asyncio.sleep(0)
    for thread in threading.enumerate():
        if thread.name.startswith("moodbot-db"):
            thread.join(timeout=5)
    assert _db_threads() == []


# --- failures ------------------------------------------------------------------------------------


def test_corrupt_file_is_unavailable_and_named(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database " * 200)
    with pytest.raises(HistoryUnavailable) as caught:
        HistoryStore(corrupt)
    assert str(caught.value) == (
        "The mood history database cannot be used right now"
        f" ({corrupt}: file is not a database (SQLITE_NOTADB))"
    )
    assert caught.value.path == str(corrupt)


def test_read_only_database(path: Path) -> None:
    with HistoryStore(path) as store:
        store.record(mood("sad"))
    # The folder stays writable: a WAL reader must be able to create the -shm file (see below).
    path.chmod(0o444)
    try:
        # Tests may run as root, whom file modes do not stop: the read-only URI does.
        with HistoryStore(path, read_only=True) as store:
            assert [e.emotion for e in store.recent("telegram", "u1")] == ["sad"]
            assert store.get_preferences("telegram", "u1") == Preferences()
            with pytest.raises(HistoryUnavailable) as caught:
                store.record(mood("happy"))
            assert str(path) in str(caught.value)
            assert caught.value.reason == "attempt to write a readonly database (SQLITE_READONLY)"
            with pytest.raises(HistoryUnavailable, match="readonly"):
                store.set_preferences("telegram", "u1", mode="calm")
            with pytest.raises(HistoryUnavailable, match="readonly"):
                store.forget_user("telegram", "u1")
    finally:
        path.chmod(0o644)
    assert raw(path, "SELECT emotion FROM moods") == [("sad",)]


def _modes_bind_us(path: Path) -> bool:
    """Whether file modes stop this process (not so for root with CAP_DAC_OVERRIDE)."""
    try:
        with path.open("ab"):
            return False
    except PermissionError:
        return True


def test_read_only_file_without_the_read_only_flag(path: Path) -> None:
    HistoryStore(path).close()
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        if not _modes_bind_us(path):
            pytest.skip("file modes do not stop this user (root); see test_read_only_database")
        with pytest.raises(HistoryUnavailable) as caught, HistoryStore(path) as store:
            store.record(mood())
        assert str(path) in str(caught.value)
        # A cleanly closed WAL file has no -shm, and a reader cannot create one here.
        with pytest.raises(HistoryUnavailable, match="SQLITE_READONLY_DIRECTORY"):
            HistoryStore(path, read_only=True)
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)


def test_read_only_needs_an_existing_up_to_date_file(tmp_path: Path) -> None:
    with pytest.raises(HistoryUnavailable, match="unable to open database file"):
        HistoryStore(tmp_path / "missing.db", read_only=True)
    empty = tmp_path / "empty.db"
    raw(empty, "CREATE TABLE other (x)")
    with pytest.raises(HistoryUnavailable) as caught:
        HistoryStore(empty, read_only=True)
    assert caught.value.reason == (
        "schema is out of date (pending: m001_create_moods, m002_create_preferences,"
        " m003_mood_corrections, m004_mood_request_ids, m005_create_recommended_tracks)"
    )


def test_disk_full_is_unavailable(store: HistoryStore, path: Path) -> None:
    # max_page_count caps this connection's file size: an honest SQLITE_FULL without a full disk.
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(HistoryUnavailable) as caught:
        for minute in range(5000):
            store.record(mood(minutes=minute))
    assert caught.value.reason == "database or disk is full (SQLITE_FULL)"
    assert str(path) in str(caught.value)
    assert raw(path, "PRAGMA integrity_check") == [("ok",)]


def test_use_after_close_is_a_bug_not_an_outage(path: Path) -> None:
    store = HistoryStore(path)
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.recent("telegram", "u1")
