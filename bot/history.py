"""Mood history: one row per analysed selfie (never the photo), plus user preferences.

Two backends behind one async interface (`History`), chosen by `open_history(MOODBOT_DB)`:
- SQLite (the default, a file path): `HistoryStore` is synchronous and bound to the thread that
  opened it (sqlite3 connections are); `AsyncHistory` owns one store inside a dedicated worker
  thread so that coroutines can use it without ever blocking the event loop.
- PostgreSQL (a postgresql:// URL): `bot.history_pg.PostgresHistory`, for several replicas.
Validation, row mapping and the SQL both engines understand live here, once.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
import numbers
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from sqlite_utils import Database, Migrations

from ml.labels import MODES

logger = logging.getLogger(__name__)

PLATFORMS = ("telegram", "discord", "console", "web")
MAX_RECENT = 100
# Tracks remembered per person for "no repeats"; older ones are dropped as new ones come.
MAX_REMEMBERED_TRACKS = 500
DEFAULT_BUSY_TIMEOUT_MS = 5000
_WAL_RETRY_S = 0.02

P = ParamSpec("P")
R = TypeVar("R")


class HistoryUnavailable(Exception):
    """The mood history database cannot be used right now."""

    def __init__(self, path: str | Path, reason: str) -> None:
        # `path` is a file, or a PostgreSQL URL without its password (redacted_url()).
        super().__init__(f"{(self.__doc__ or '').rstrip('.')} ({path}: {reason})")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class MoodEntry:
    """One analysed selfie: who, where, which emotion and when; never the image itself."""

    platform: str
    chat_id: str
    user_id: str
    emotion: str
    confidence: float
    face_count: int
    created_at: datetime
    # Set once the owner corrected the mood: `emotion` is then theirs, this the model's reading.
    predicted: str | None = None
    id: int | None = field(default=None, compare=False)  # the row id, once stored
    # The chat platform's id of the message it came from (Telegram's update_id): a message
    # processed twice (a webhook redelivered, a replica that died mid-way) is stored once.
    request_id: str | None = field(default=None, compare=False)

    @property
    def corrected(self) -> bool:
        return self.predicted is not None


@dataclass(frozen=True)
class CorrectionStats:
    """Analyses and corrections since a time, and what the model read vs what people said."""

    analyses: int
    corrections: int
    predicted: dict[str, int]  # analyses per emotion the model read
    matrix: dict[tuple[str, str], int]  # (predicted, corrected) -> count


@dataclass(frozen=True)
class Preferences:
    """How a user wants music chosen: match, lift or calm their mood, optionally in a genre."""

    mode: str = "match"
    genre: str | None = None


class _Unset(enum.Enum):
    # A sentinel with its own type, so `genre=None` ("clear it") differs from "leave as is".
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


# --- schema --------------------------------------------------------------------------------------
# Migrations are append-only: never edit one that has shipped, add a new function instead.
# They spell out table names literally so that later renames cannot rewrite history.

MIGRATIONS = Migrations("moodbot")


@MIGRATIONS(name="m001_create_moods")
def _m001_create_moods(db: Database) -> None:
    moods = db.table("moods")
    moods.create(
        {
            "id": int,
            "platform": str,
            "chat_id": str,
            "user_id": str,
            "emotion": str,
            "confidence": float,
            "face_count": int,
            "created_at": str,
        },
        pk="id",
        not_null={
            "platform",
            "chat_id",
            "user_id",
            "emotion",
            "confidence",
            "face_count",
            "created_at",
        },
    )
    moods.create_index(["platform", "user_id", "created_at"], index_name="idx_moods_user_time")
    moods.create_index(["platform", "chat_id", "created_at"], index_name="idx_moods_chat_time")
    # delete_older_than() scans by time alone.
    moods.create_index(["created_at"], index_name="idx_moods_time")


@MIGRATIONS(name="m002_create_preferences")
def _m002_create_preferences(db: Database) -> None:
    db.table("preferences").create(
        {"platform": str, "user_id": str, "mode": str, "genre": str},
        pk=("platform", "user_id"),
        not_null={"platform", "user_id", "mode"},
        defaults={"mode": "match"},
    )


@MIGRATIONS(name="m003_mood_corrections")
def _m003_mood_corrections(db: Database) -> None:
    # A corrected row keeps the model's reading in `predicted`; uncorrected rows leave both NULL.
    moods = db.table("moods")
    moods.add_column("predicted", str)
    moods.add_column("corrected_at", str)


@MIGRATIONS(name="m004_mood_request_ids")
def _m004_mood_request_ids(db: Database) -> None:
    moods = db.table("moods")
    moods.add_column("request_id", str)
    # NULLs never clash: only moods from an identified message are deduplicated.
    moods.create_index(["request_id"], index_name="idx_moods_request", unique=True)


@MIGRATIONS(name="m005_create_recommended_tracks")
def _m005_create_recommended_tracks(db: Database) -> None:
    # The tracks each person was offered, so that nobody gets the same song twice in a row.
    tracks = db.table("recommended_tracks")
    tracks.create(
        {"id": int, "platform": str, "user_id": str, "track_id": str, "created_at": str},
        pk="id",
        not_null={"platform", "user_id", "track_id", "created_at"},
    )
    tracks.create_index(
        ["platform", "user_id", "created_at"], index_name="idx_recommended_tracks_user_time"
    )
    tracks.create_index(["created_at"], index_name="idx_recommended_tracks_time")


# --- helpers -------------------------------------------------------------------------------------


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """Turn SQLite failures (read-only, disk full, corrupt, locked) into HistoryUnavailable."""
    try:
        yield
    except sqlite3.ProgrammingError:
        # Misuse (closed store, wrong thread) is a bug in the caller, not an outage.
        raise
    except sqlite3.Error as exc:
        # The error name tells apart cases with one message, e.g. SQLITE_READONLY_DIRECTORY.
        name = getattr(exc, "sqlite_errorname", None)
        reason = f"{exc} ({name})" if name else str(exc)
        logger.warning("Mood history %s unavailable: %s", path, reason)
        raise HistoryUnavailable(path, reason) from exc


def _guarded(
    method: Callable[Concatenate[HistoryStore, P], R],
) -> Callable[Concatenate[HistoryStore, P], R]:
    @functools.wraps(method)
    def wrapper(self: HistoryStore, *args: P.args, **kwargs: P.kwargs) -> R:
        with _sqlite_errors(self.path):
            return method(self, *args, **kwargs)

    return wrapper


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _timestamp(name: str, value: object) -> str:
    """Format an aware datetime as fixed-width ISO-8601 UTC text, which sorts chronologically."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _validate(entry: MoodEntry) -> None:
    if entry.platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {entry.platform!r}")
    _require_text("chat_id", entry.chat_id)
    _require_text("user_id", entry.user_id)
    _require_text("emotion", entry.emotion)
    confidence = entry.confidence
    # numbers.Real/Integral also accept numpy scalars straight from the classifier.
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0.0 <= confidence <= 1.0  # also rejects NaN
    ):
        raise ValueError(f"confidence must be a number in [0, 1], got {confidence!r}")
    face_count = entry.face_count
    if (
        isinstance(face_count, bool)
        or not isinstance(face_count, numbers.Integral)
        or face_count < 1
    ):
        raise ValueError(f"face_count must be an integer >= 1, got {face_count!r}")
    _timestamp("created_at", entry.created_at)


def _to_row(entry: MoodEntry) -> dict[str, Any]:
    # Built field by field on purpose: nothing but these columns is ever stored.
    return {
        "platform": entry.platform,
        "chat_id": entry.chat_id,
        "user_id": entry.user_id,
        "emotion": entry.emotion,
        "confidence": float(entry.confidence),
        "face_count": int(entry.face_count),
        "created_at": _timestamp("created_at", entry.created_at),
        "request_id": entry.request_id,
    }


def _datetime(value: str | datetime) -> datetime:
    # SQLite keeps ISO-8601 text, PostgreSQL a timestamptz: both come back as aware UTC.
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC)


def _from_row(row: dict[str, Any]) -> MoodEntry:
    return MoodEntry(
        platform=row["platform"],
        chat_id=row["chat_id"],
        user_id=row["user_id"],
        emotion=row["emotion"],
        confidence=row["confidence"],
        face_count=row["face_count"],
        created_at=_datetime(row["created_at"]),
        predicted=row["predicted"],
        id=row["id"],
    )


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return min(limit, MAX_RECENT)


def _checked_preferences(
    platform: str, user_id: str, mode: str | _Unset, genre: str | _Unset | None
) -> tuple[str | _Unset, str | _Unset | None]:
    """Validate a set_preferences() call; returns (mode, genre) with the genre trimmed."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
    _require_text("user_id", user_id)
    if mode is not _UNSET and mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if genre is not _UNSET and genre is not None:
        genre = _require_text("genre", genre).strip()
    return mode, genre


def _checked_tracks(
    platform: str, user_id: str, track_ids: Iterable[str], at: datetime
) -> list[list[str]]:
    """Validate a remember_tracks() call; returns SQL_REMEMBER_TRACK's parameters per track."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
    _require_text("user_id", user_id)
    when = _timestamp("at", at)
    return [[platform, user_id, _require_text("track_id", t), when] for t in track_ids]


def _tracks_limit(n: int) -> int:
    """How many remembered tracks recent_track_ids(n) reads: 0 (none) to the most kept."""
    return max(0, min(n, MAX_REMEMBERED_TRACKS))


def _trim_tracks_params(platform: str, user_id: str) -> list[Any]:
    return [platform, user_id, platform, user_id, MAX_REMEMBERED_TRACKS]


def _merged(current: Preferences, mode: str | _Unset, genre: str | _Unset | None) -> Preferences:
    return Preferences(
        mode=current.mode if mode is _UNSET else mode,
        genre=current.genre if genre is _UNSET else genre,
    )


# --- SQL both backends run -----------------------------------------------------------------------
# Written with `?` placeholders in SQL that SQLite and PostgreSQL both understand; the PostgreSQL
# backend swaps in psycopg's `%s` (bot/history_pg.py). Timestamps are passed as the ISO-8601 text
# _timestamp() makes: SQLite compares it as text (fixed width, UTC: it sorts in time order), and
# PostgreSQL casts it to timestamptz.

_ENTRY_COLUMNS = (
    "platform, chat_id, user_id, emotion, confidence, face_count, created_at, predicted, id"
)

SQL_RECENT = (
    f"SELECT {_ENTRY_COLUMNS} FROM moods WHERE platform = ? AND user_id = ?"
    " ORDER BY created_at DESC, id DESC LIMIT ?"
)
SQL_MOOD_COUNTS = (
    "SELECT emotion, COUNT(*) AS n FROM moods"
    " WHERE platform = ? AND user_id = ? AND created_at >= ?"
    " GROUP BY emotion ORDER BY n DESC, emotion"
)
SQL_CHAT_LATEST = (
    f"SELECT {_ENTRY_COLUMNS} FROM ("
    f" SELECT {_ENTRY_COLUMNS}, ROW_NUMBER() OVER ("
    "  PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS position"
    " FROM moods WHERE platform = ? AND chat_id = ? AND created_at >= ?"
    ") AS latest WHERE position = 1 ORDER BY created_at DESC, id DESC"
)
SQL_OWN_RECENT_ENTRY = (
    f"SELECT {_ENTRY_COLUMNS} FROM moods"
    " WHERE id = ? AND platform = ? AND user_id = ? AND created_at >= ?"
)
SQL_CORRECT = "UPDATE moods SET emotion = ?, predicted = ?, corrected_at = ? WHERE id = ?"
SQL_FORGET_MOODS = "DELETE FROM moods WHERE platform = ? AND user_id = ?"
SQL_FORGET_PREFERENCES = "DELETE FROM preferences WHERE platform = ? AND user_id = ?"
SQL_DELETE_OLDER = "DELETE FROM moods WHERE created_at < ?"
SQL_RECENT_TRACKS = (
    "SELECT track_id FROM recommended_tracks WHERE platform = ? AND user_id = ?"
    " ORDER BY created_at DESC, id DESC LIMIT ?"
)
SQL_REMEMBER_TRACK = (
    "INSERT INTO recommended_tracks (platform, user_id, track_id, created_at) VALUES (?, ?, ?, ?)"
)
# Keeps a user's latest MAX_REMEMBERED_TRACKS: parameters platform, user_id, platform, user_id, n.
SQL_TRIM_TRACKS = (
    "DELETE FROM recommended_tracks WHERE platform = ? AND user_id = ? AND id NOT IN"
    " (SELECT id FROM recommended_tracks WHERE platform = ? AND user_id = ?"
    " ORDER BY created_at DESC, id DESC LIMIT ?)"
)
SQL_FORGET_TRACKS = "DELETE FROM recommended_tracks WHERE platform = ? AND user_id = ?"
SQL_DELETE_OLDER_TRACKS = "DELETE FROM recommended_tracks WHERE created_at < ?"
SQL_GET_PREFERENCES = "SELECT mode, genre FROM preferences WHERE platform = ? AND user_id = ?"
SQL_SET_PREFERENCES = (
    "INSERT INTO preferences (platform, user_id, mode, genre) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (platform, user_id) DO UPDATE SET mode = excluded.mode, genre = excluded.genre"
)


def correction_params(before: MoodEntry, emotion: str, at: datetime) -> list[Any]:
    """SQL_CORRECT's parameters: the model's reading is kept; correcting back to it clears it."""
    assert before.id is not None
    predicted = before.predicted or before.emotion
    corrected = emotion != predicted
    return [
        emotion,
        predicted if corrected else None,
        _timestamp("at", at) if corrected else None,
        before.id,
    ]


def correction_stats_sql(since: datetime | None) -> tuple[str, list[Any]]:
    """The query behind correction_stats(), with its parameters."""
    where, args = ("WHERE created_at >= ?", [_timestamp("since", since)]) if since else ("", [])
    sql = (
        "SELECT COALESCE(predicted, emotion) AS read, emotion, predicted IS NOT NULL"
        f" AS corrected, COUNT(*) AS n FROM moods {where} GROUP BY 1, 2, 3"
    )
    return sql, args


def correction_stats_from(rows: Iterable[dict[str, Any]]) -> CorrectionStats:
    predicted: dict[str, int] = {}
    matrix: dict[tuple[str, str], int] = {}
    for row in rows:
        predicted[row["read"]] = predicted.get(row["read"], 0) + row["n"]
        if row["corrected"]:
            matrix[(row["read"], row["emotion"])] = row["n"]
    return CorrectionStats(
        analyses=sum(predicted.values()),
        corrections=sum(matrix.values()),
        predicted=dict(sorted(predicted.items(), key=lambda item: (-item[1], item[0]))),
        matrix=dict(sorted(matrix.items(), key=lambda item: (-item[1], item[0]))),
    )


def insert_sql(table: str, row: dict[str, Any], *, unless: str = "") -> str:
    """An INSERT of exactly the row's columns, returning the new id.

    `unless` names a unique column: a row whose value is already there is not inserted (and
    nothing is returned).
    """
    columns = ", ".join(row)
    skip = f" ON CONFLICT ({unless}) DO NOTHING" if unless else ""
    values = ", ".join("?" * len(row))
    return f"INSERT INTO {table} ({columns}) VALUES ({values}){skip} RETURNING id"


SQL_MOOD_OF_REQUEST = "SELECT id FROM moods WHERE request_id = ?"
# Every table with its key, in the order `moodbot db copy` reads it.
_KEY_ORDER = {"moods": "id", "preferences": "platform, user_id", "recommended_tracks": "id"}


def insert_mood_sql(row: dict[str, Any]) -> str:
    """Store a mood once per request: a second insert for the same request_id does nothing."""
    return insert_sql("moods", row, unless="request_id")


class History(Protocol):
    """What the core needs from a mood history, whichever database holds it."""

    @property
    def location(self) -> str:
        """Where the history lives: a file, or a URL without its password."""
        ...

    async def record(self, entry: MoodEntry) -> int: ...
    async def recent(self, platform: str, user_id: str, limit: int = 10) -> list[MoodEntry]: ...
    async def mood_counts(self, platform: str, user_id: str, since: datetime) -> dict[str, int]: ...
    async def chat_latest_moods(
        self, platform: str, chat_id: str, since: datetime
    ) -> dict[str, MoodEntry]: ...
    async def correct_mood(
        self,
        row_id: int,
        platform: str,
        user_id: str,
        emotion: str,
        *,
        since: datetime,
        at: datetime,
    ) -> MoodEntry | None: ...
    async def correction_stats(self, since: datetime | None = None) -> CorrectionStats: ...
    async def recent_track_ids(self, platform: str, user_id: str, n: int) -> list[str]: ...
    async def remember_tracks(
        self, platform: str, user_id: str, track_ids: Sequence[str], at: datetime
    ) -> None: ...
    async def forget_user(self, platform: str, user_id: str) -> int: ...
    async def delete_older_than(self, cutoff: datetime) -> int: ...
    async def get_preferences(self, platform: str, user_id: str) -> Preferences: ...
    async def set_preferences(
        self,
        platform: str,
        user_id: str,
        *,
        mode: str | _Unset = _UNSET,
        genre: str | _Unset | None = _UNSET,
    ) -> Preferences: ...
    async def probe(self) -> str | None:
        """None when the database takes a write now, else why not (for /healthz)."""
        ...

    async def aclose(self) -> None: ...


def is_postgres_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


async def open_history(target: str | Path, **options: Any) -> History:
    """A PostgreSQL history for a postgresql:// URL, else a SQLite file at that path."""
    if is_postgres_url(target):
        from bot.history_pg import PostgresHistory  # psycopg loads only when used

        return await PostgresHistory.open(str(target), **options)
    return await AsyncHistory.open(Path(target), **options)


# --- the store -----------------------------------------------------------------------------------


class HistoryStore:
    """Synchronous mood history on one SQLite file; use it only from the thread that opened it."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        max_pages: int | None = None,
    ) -> None:
        """Open (creating if needed) the database at `path` and bring its schema up to date.

        `max_pages` caps the file's size in pages (SQLite's max_page_count, never below the
        current size): beyond it writes fail with SQLITE_FULL, exactly as on a full disk, so a
        history cannot fill a disk it shares, and tests can fill one honestly.
        """
        self.path = Path(path)
        self.read_only = read_only
        self.max_pages = max_pages
        conn: sqlite3.Connection | None = None
        with _sqlite_errors(self.path):
            try:
                conn = self._connect()
                self._db = Database(conn)
                self._configure(busy_timeout_ms)
                self._migrate()
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
        logger.debug("Opened mood history %s (read_only=%s)", self.path, read_only)

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            # A read-only URI fails every write, even for root, unlike file permissions.
            uri = self.path.resolve().as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryUnavailable(self.path, f"cannot create its folder: {exc}") from exc
        return sqlite3.connect(self.path)

    def _configure(self, busy_timeout_ms: int) -> None:
        # busy_timeout first: enabling WAL and migrating may wait on another writer.
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        self._db.execute("PRAGMA foreign_keys = ON")
        if not self.read_only:
            # WAL lets readers run while one writer writes (several bots, one file).
            self._enable_wal(busy_timeout_ms)
        # With WAL, NORMAL cannot corrupt the file. A killed process loses nothing committed
        # (the OS still holds the WAL); only a power cut may lose the last commits.
        self._db.execute("PRAGMA synchronous = NORMAL")
        if self.max_pages is not None:
            self._db.execute(f"PRAGMA max_page_count = {int(self.max_pages)}")

    def _enable_wal(self, busy_timeout_ms: int) -> None:
        # Switching a fresh file to WAL needs it to itself, and SQLite may answer SQLITE_BUSY
        # at once, without its busy handler, while another process opens the same file
        # (seen in CI with two bots starting together): retry within the same timeout.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                self._db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                # The low byte of an extended code names its family (SQLITE_BUSY_RECOVERY...).
                family = getattr(exc, "sqlite_errorcode", 0) & 0xFF
                busy = family in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(_WAL_RETRY_S)

    def _migrate(self) -> None:
        if not MIGRATIONS.pending(self._db):
            return  # the common case: reopening needs no write lock at all
        if self.read_only:
            names = ", ".join(m.name for m in MIGRATIONS.pending(self._db))
            raise HistoryUnavailable(self.path, f"schema is out of date (pending: {names})")
        # Several processes may open a fresh file at once: the write lock serialises them, and
        # apply() re-reads what is pending once it holds the lock. Hence every migration must
        # be transactional (no VACUUM).
        with self._write():
            MIGRATIONS.apply(self._db)

    @contextmanager
    def _write(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so busy_timeout applies; a deferred
        # transaction that upgrades from read to write can fail at once with SQLITE_BUSY.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.rollback()
            raise

    @_guarded
    def record(self, entry: MoodEntry) -> int:
        """Store one mood entry and return its row id."""
        _validate(entry)
        row = _to_row(entry)
        with self._write():
            inserted = self._db.execute(insert_mood_sql(row), list(row.values())).fetchone()
            if inserted is None:  # this message's mood is already stored
                logger.info("Mood of %s already recorded", entry.request_id)
                inserted = self._db.execute(SQL_MOOD_OF_REQUEST, [entry.request_id]).fetchone()
        logger.debug("Recorded %s for %s:%s", entry.emotion, entry.platform, entry.user_id)
        return int(inserted[0])

    @_guarded
    def recent(self, platform: str, user_id: str, limit: int = 10) -> list[MoodEntry]:
        """Return a user's latest entries, newest first (at most MAX_RECENT)."""
        rows = self._db.query(SQL_RECENT, [platform, user_id, _check_limit(limit)])
        return [_from_row(row) for row in rows]

    @_guarded
    def mood_counts(self, platform: str, user_id: str, since: datetime) -> dict[str, int]:
        """Count a user's entries per emotion since `since`, most frequent first."""
        rows = self._db.query(SQL_MOOD_COUNTS, [platform, user_id, _timestamp("since", since)])
        return {row["emotion"]: row["n"] for row in rows}

    @_guarded
    def chat_latest_moods(
        self, platform: str, chat_id: str, since: datetime
    ) -> dict[str, MoodEntry]:
        """Return each chat member's latest entry since `since` (user_id -> entry), newest first."""
        rows = self._db.query(SQL_CHAT_LATEST, [platform, chat_id, _timestamp("since", since)])
        return {row["user_id"]: _from_row(row) for row in rows}

    @_guarded
    def correct_mood(
        self,
        row_id: int,
        platform: str,
        user_id: str,
        emotion: str,
        *,
        since: datetime,
        at: datetime,
    ) -> MoodEntry | None:
        """Replace the mood of one of this user's rows created since `since`, in place.

        The model's reading is kept in `predicted`; correcting back to it clears the mark.
        Returns the row as it was before, or None when no such row (someone else's, deleted,
        or older than `since`) exists: then nothing changed.
        """
        _require_text("emotion", emotion)
        where = [row_id, platform, user_id, _timestamp("since", since)]
        with self._write():
            rows = list(self._db.query(SQL_OWN_RECENT_ENTRY, where))
            if not rows:
                return None
            before = _from_row(rows[0])
            self._db.execute(SQL_CORRECT, correction_params(before, emotion, at))
        return before

    @_guarded
    def correction_stats(self, since: datetime | None = None) -> CorrectionStats:
        """How often people corrected the model since `since` (all time when None)."""
        sql, args = correction_stats_sql(since)
        return correction_stats_from(self._db.query(sql, args))

    @_guarded
    def recent_track_ids(self, platform: str, user_id: str, n: int) -> list[str]:
        """The Spotify ids of the last `n` tracks recommended to a user, newest first."""
        if not (limit := _tracks_limit(n)):
            return []
        rows = self._db.query(SQL_RECENT_TRACKS, [platform, user_id, limit])
        return [row["track_id"] for row in rows]

    @_guarded
    def remember_tracks(
        self, platform: str, user_id: str, track_ids: Sequence[str], at: datetime
    ) -> None:
        """Note the tracks just recommended to a user (keeping their latest few hundred)."""
        rows = _checked_tracks(platform, user_id, track_ids, at)
        with self._write():
            self._db.conn.executemany(SQL_REMEMBER_TRACK, rows)
            self._db.execute(SQL_TRIM_TRACKS, _trim_tracks_params(platform, user_id))

    @_guarded
    def forget_user(self, platform: str, user_id: str) -> int:
        """Delete a user's moods in every chat of `platform`, preferences and track memory.

        Returns the number of mood rows deleted.
        """
        with self._write():
            deleted = self._db.execute(SQL_FORGET_MOODS, [platform, user_id])
            self._db.execute(SQL_FORGET_PREFERENCES, [platform, user_id])
            self._db.execute(SQL_FORGET_TRACKS, [platform, user_id])
        logger.info("Forgot %d moods of %s:%s", deleted.rowcount, platform, user_id)
        return deleted.rowcount

    @_guarded
    def delete_older_than(self, cutoff: datetime) -> int:
        """Delete every mood (and track memory) from before `cutoff`; returns the moods deleted."""
        before = [_timestamp("cutoff", cutoff)]
        with self._write():
            deleted = self._db.execute(SQL_DELETE_OLDER, before)
            self._db.execute(SQL_DELETE_OLDER_TRACKS, before)
        logger.info("Deleted %d moods older than %s", deleted.rowcount, cutoff)
        return deleted.rowcount

    @_guarded
    def get_preferences(self, platform: str, user_id: str) -> Preferences:
        """Return a user's preferences, or the defaults when they have none."""
        rows = list(self._db.query(SQL_GET_PREFERENCES, [platform, user_id]))
        return Preferences(**rows[0]) if rows else Preferences()

    @_guarded
    def set_preferences(
        self,
        platform: str,
        user_id: str,
        *,
        mode: str | _Unset = _UNSET,
        genre: str | _Unset | None = _UNSET,
    ) -> Preferences:
        """Change only the given preferences (genre=None clears it); returns the result."""
        mode, genre = _checked_preferences(platform, user_id, mode, genre)
        with self._write():
            updated = _merged(self.get_preferences(platform, user_id), mode, genre)
            self._db.execute(SQL_SET_PREFERENCES, [platform, user_id, updated.mode, updated.genre])
        return updated

    def rows(self, table: str, batch: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Every row of a table (moods, preferences, recommended_tracks) as stored, in batches.

        For `moodbot db copy`: the columns are the stored ones, whatever later migrations add.
        """
        order = _KEY_ORDER[table]
        with _sqlite_errors(self.path):
            rows = self._db.query(f"SELECT * FROM {table} ORDER BY {order}")
            while chunk := list(itertools.islice(rows, batch)):
                yield chunk

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HistoryStore {str(self.path)!r} read_only={self.read_only}>"


def probe_database(path: Path, timeout: float = 1.0) -> str | None:
    """None when a write transaction can start on the file now, else why not.

    A separate short-lived connection takes the write lock and gives it straight back:
    nothing is written, and a database locked by a stuck writer counts as not writable.
    """
    try:
        # mode=rw: never create a missing database file while checking it.
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None
        )
    except sqlite3.Error as exc:
        return str(exc)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        connection.close()
    return None


# --- asyncio facade ------------------------------------------------------------------------------


class AsyncHistory:
    """The HistoryStore API as coroutines, all run on one dedicated database thread."""

    def __init__(self, executor: ThreadPoolExecutor, store: HistoryStore) -> None:
        # Use `await AsyncHistory.open(path)`: the store must be created on the executor thread.
        self._executor = executor
        self._store = store
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, **options: Any) -> AsyncHistory:
        """Open a HistoryStore on a new single worker thread; options go to HistoryStore."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moodbot-db")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(
                executor, functools.partial(HistoryStore, path, **options)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, store)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._store.path

    @property
    def location(self) -> str:
        return str(self._store.path)

    async def probe(self) -> str | None:
        """None when a write transaction can start on the file now, else why not."""
        # Its own short-lived connection, off the database thread: a stuck writer there must
        # show up as "not writable", not hang the check behind it.
        return await asyncio.to_thread(probe_database, self._store.path)

    async def _call(self, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        # Every store call goes through the one worker thread that owns the connection.
        method = getattr(self._store, fn_name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(method, *args, **kwargs)
        )

    async def record(self, entry: MoodEntry) -> int:
        """Store one mood entry and return its row id."""
        return await self._call("record", entry)

    async def recent(self, platform: str, user_id: str, limit: int = 10) -> list[MoodEntry]:
        """Return a user's latest entries, newest first."""
        return await self._call("recent", platform, user_id, limit)

    async def mood_counts(self, platform: str, user_id: str, since: datetime) -> dict[str, int]:
        """Count a user's entries per emotion since `since`, most frequent first."""
        return await self._call("mood_counts", platform, user_id, since)

    async def chat_latest_moods(
        self, platform: str, chat_id: str, since: datetime
    ) -> dict[str, MoodEntry]:
        """Return each chat member's latest entry since `since`."""
        return await self._call("chat_latest_moods", platform, chat_id, since)

    async def correct_mood(
        self,
        row_id: int,
        platform: str,
        user_id: str,
        emotion: str,
        *,
        since: datetime,
        at: datetime,
    ) -> MoodEntry | None:
        """Replace the mood of one of this user's recent rows; the row as it was, or None."""
        return await self._call(
            "correct_mood", row_id, platform, user_id, emotion, since=since, at=at
        )

    async def correction_stats(self, since: datetime | None = None) -> CorrectionStats:
        """How often people corrected the model since `since`."""
        return await self._call("correction_stats", since)

    async def recent_track_ids(self, platform: str, user_id: str, n: int) -> list[str]:
        """The Spotify ids of the last `n` tracks recommended to a user, newest first."""
        return await self._call("recent_track_ids", platform, user_id, n)

    async def remember_tracks(
        self, platform: str, user_id: str, track_ids: Sequence[str], at: datetime
    ) -> None:
        """Note the tracks just recommended to a user."""
        await self._call("remember_tracks", platform, user_id, track_ids, at)

    async def forget_user(self, platform: str, user_id: str) -> int:
        """Delete a user's moods, preferences and track memory; returns mood rows deleted."""
        return await self._call("forget_user", platform, user_id)

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete every entry created before `cutoff`; returns the number deleted."""
        return await self._call("delete_older_than", cutoff)

    async def get_preferences(self, platform: str, user_id: str) -> Preferences:
        """Return a user's preferences, or the defaults."""
        return await self._call("get_preferences", platform, user_id)

    async def set_preferences(
        self,
        platform: str,
        user_id: str,
        *,
        mode: str | _Unset = _UNSET,
        genre: str | _Unset | None = _UNSET,
    ) -> Preferences:
        """Change only the given preferences; returns the result."""
        return await self._call("set_preferences", platform, user_id, mode=mode, genre=genre)

    async def aclose(self) -> None:
        """Close the store on its thread, then stop the thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._call("close")
        finally:
            # Join the worker off the loop: when aclose() returns, the thread is gone.
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
