"""Mood history on PostgreSQL, for several replicas sharing one database.

The same methods, validation and SQL as the SQLite history (bot/history.py), run on an async
psycopg 3 connection pool. Why psycopg 3 and not asyncpg: it speaks the same DB-API style and
`?`-free parameter passing the shared SQL is written for (asyncpg wants `$1`), its pool checks a
connection before lending it (so a restarted server costs one retry, not a burst of errors), and
one library serves the async bot and the synchronous `moodbot db copy`.

Schema changes are numbered steps (MIGRATIONS), applied at start inside one transaction under a
PostgreSQL advisory lock: replicas starting together wait for each other, and each step runs
exactly once. The retention purge takes another advisory lock without waiting, so one replica
purges at a time and the others skip that round.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from bot.history import (
    _UNSET,
    SQL_CHAT_LATEST,
    SQL_CORRECT,
    SQL_DELETE_OLDER,
    SQL_DELETE_OLDER_TRACKS,
    SQL_FORGET_MOODS,
    SQL_FORGET_PREFERENCES,
    SQL_FORGET_TRACKS,
    SQL_GET_PREFERENCES,
    SQL_MOOD_COUNTS,
    SQL_MOOD_OF_REQUEST,
    SQL_OWN_RECENT_ENTRY,
    SQL_RECENT,
    SQL_RECENT_TRACKS,
    SQL_REMEMBER_TRACK,
    SQL_SET_PREFERENCES,
    SQL_TRIM_TRACKS,
    CorrectionStats,
    HistoryStore,
    HistoryUnavailable,
    MoodEntry,
    Preferences,
    _check_limit,
    _checked_preferences,
    _checked_tracks,
    _datetime,
    _from_row,
    _merged,
    _require_text,
    _timestamp,
    _to_row,
    _tracks_limit,
    _trim_tracks_params,
    _Unset,
    _validate,
    correction_params,
    correction_stats_from,
    correction_stats_sql,
    insert_mood_sql,
)

log = logging.getLogger(__name__)

# Advisory lock keys: any 64-bit numbers, fixed forever, used by nothing else in the database.
MIGRATION_LOCK = 0x6D6F_6F64_0001
RETENTION_LOCK = 0x6D6F_6F64_0002

DEFAULT_POOL_SIZE = 10
# How long a call waits for a connection before the bot answers "history unavailable": short,
# because a chat user is waiting behind it.
DEFAULT_TIMEOUT_S = 3.0
STATEMENT_TIMEOUT_MS = 10_000

# --- schema --------------------------------------------------------------------------------------
# Append-only, like the SQLite migrations: never edit a step that has shipped, add one instead.

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "m001_create_moods",
        """
        CREATE TABLE moods (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            platform text NOT NULL,
            chat_id text NOT NULL,
            user_id text NOT NULL,
            emotion text NOT NULL,
            confidence double precision NOT NULL,
            face_count integer NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX idx_moods_user_time ON moods (platform, user_id, created_at);
        CREATE INDEX idx_moods_chat_time ON moods (platform, chat_id, created_at);
        CREATE INDEX idx_moods_time ON moods (created_at);
        """,
    ),
    (
        "m002_create_preferences",
        """
        CREATE TABLE preferences (
            platform text NOT NULL,
            user_id text NOT NULL,
            mode text NOT NULL DEFAULT 'match',
            genre text,
            PRIMARY KEY (platform, user_id)
        );
        """,
    ),
    (
        "m003_mood_corrections",
        # A corrected row keeps the model's reading in `predicted`; others leave both NULL.
        "ALTER TABLE moods ADD COLUMN predicted text, ADD COLUMN corrected_at timestamptz;",
    ),
    (
        "m004_mood_request_ids",
        # NULLs never clash: only moods from an identified message are deduplicated.
        """
        ALTER TABLE moods ADD COLUMN request_id text;
        CREATE UNIQUE INDEX idx_moods_request ON moods (request_id);
        """,
    ),
    (
        "m005_telegram_inbox",
        # Webhook updates, written before Telegram gets its 200 (bot/inbox.py). `payload` is
        # the update's JSON (file ids, never photo bytes) and is cleared once handled; the row
        # stays a day so that a redelivery is recognised.
        """
        CREATE TABLE telegram_inbox (
            update_id bigint PRIMARY KEY,
            user_id text,
            payload jsonb,
            received_at timestamptz NOT NULL DEFAULT now(),
            claimed_by text,
            lease_until timestamptz,
            attempts integer NOT NULL DEFAULT 0,
            done_at timestamptz
        );
        CREATE INDEX idx_inbox_pending ON telegram_inbox (received_at) WHERE done_at IS NULL;
        CREATE INDEX idx_inbox_user ON telegram_inbox (user_id);
        """,
    ),
    (
        "m006_create_recommended_tracks",
        # The tracks each person was offered, so that nobody gets the same song twice in a row.
        """
        CREATE TABLE recommended_tracks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            platform text NOT NULL,
            user_id text NOT NULL,
            track_id text NOT NULL,
            created_at timestamptz NOT NULL
        );
        CREATE INDEX idx_recommended_tracks_user_time
            ON recommended_tracks (platform, user_id, created_at);
        CREATE INDEX idx_recommended_tracks_time ON recommended_tracks (created_at);
        """,
    ),
)

_LEDGER = """
CREATE TABLE IF NOT EXISTS moodbot_migrations (
    id integer PRIMARY KEY,
    name text NOT NULL UNIQUE,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@functools.cache
def pg(sql: str) -> str:
    """The shared `?` SQL in psycopg's placeholder style."""
    assert "%" not in sql, "a literal % would need escaping for psycopg"
    return sql.replace("?", "%s")


def redacted_url(url: str) -> str:
    """The URL without its password, fit for logs and /healthz."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresHistory:
    """The `History` interface on a PostgreSQL database, through an async connection pool."""

    def __init__(self, pool: AsyncConnectionPool, url: str) -> None:
        # Use `await PostgresHistory.open(url)`: it opens the pool and migrates.
        self._pool = pool
        self.url = redacted_url(url)
        self._timeout = pool.timeout

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> PostgresHistory:
        """Connect (failing within `timeout_s`), then bring the schema up to date."""
        pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout_s,
            open=False,
            name="moodbot-history",
            # A connection is tested before it is lent: after a server restart the pool throws
            # the dead ones away instead of failing a user's request with them.
            check=AsyncConnectionPool.check_connection,
            kwargs={
                "row_factory": dict_row,
                "connect_timeout": max(1, round(timeout_s)),
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            },
        )
        history = cls(pool, url)
        try:
            with history._errors():
                await pool.open(wait=True, timeout=timeout_s)
                await history.migrate()
        except BaseException:
            await pool.close()
            raise
        log.info("Mood history on PostgreSQL %s", history.url)
        return history

    @property
    def location(self) -> str:
        return self.url

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn an unreachable, stopped or read-only database into HistoryUnavailable."""
        try:
            yield
        except PoolTimeout as exc:
            log.warning("Mood history %s unavailable: %s", self.url, exc)
            raise HistoryUnavailable(self.url, "no connection (is the server up?)") from exc
        except (psycopg.ProgrammingError, psycopg.DataError, psycopg.IntegrityError):
            raise  # a bug in moodbot's SQL or values, not an outage
        except psycopg.Error as exc:
            reason = str(exc).strip() or type(exc).__name__
            log.warning("Mood history %s unavailable: %s", self.url, reason)
            raise HistoryUnavailable(self.url, reason) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        with self._errors():
            async with self._pool.connection() as conn, conn.transaction():
                yield conn

    async def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        async with self.transaction() as conn:
            cursor = await conn.execute(pg(sql), params)
            return await cursor.fetchall()

    # --- schema ---------------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply the pending steps, each once however many replicas start together."""
        applied: list[str] = []
        async with self.transaction() as conn:
            # Held until this transaction ends: a second replica waits here, then finds
            # nothing left to do. DDL is transactional in PostgreSQL, so a failed step
            # leaves no half-made schema behind.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            await conn.execute(_LEDGER)
            cursor = await conn.execute("SELECT name FROM moodbot_migrations")
            done = {row["name"] for row in await cursor.fetchall()}
            for number, (name, sql) in enumerate(MIGRATIONS, start=1):
                if name in done:
                    continue
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO moodbot_migrations (id, name) VALUES (%s, %s)", [number, name]
                )
                applied.append(name)
        if applied:
            log.info("PostgreSQL history: applied %s", ", ".join(applied))
        return applied

    # --- the History interface ------------------------------------------------------------------

    async def record(self, entry: MoodEntry) -> int:
        """Store one mood entry and return its row id."""
        _validate(entry)
        row = _to_row(entry)
        async with self.transaction() as conn:
            cursor = await conn.execute(pg(insert_mood_sql(row)), list(row.values()))
            found = await cursor.fetchone()
            if found is None:  # this message's mood is already stored
                log.info("Mood of %s already recorded", entry.request_id)
                cursor = await conn.execute(pg(SQL_MOOD_OF_REQUEST), [entry.request_id])
                found = await cursor.fetchone()
        assert found is not None
        return int(found["id"])

    async def recent(self, platform: str, user_id: str, limit: int = 10) -> list[MoodEntry]:
        """Return a user's latest entries, newest first (at most MAX_RECENT)."""
        rows = await self._rows(SQL_RECENT, [platform, user_id, _check_limit(limit)])
        return [_from_row(row) for row in rows]

    async def mood_counts(self, platform: str, user_id: str, since: datetime) -> dict[str, int]:
        """Count a user's entries per emotion since `since`, most frequent first."""
        rows = await self._rows(SQL_MOOD_COUNTS, [platform, user_id, _timestamp("since", since)])
        return {row["emotion"]: row["n"] for row in rows}

    async def chat_latest_moods(
        self, platform: str, chat_id: str, since: datetime
    ) -> dict[str, MoodEntry]:
        """Return each chat member's latest entry since `since` (user_id -> entry), newest first."""
        rows = await self._rows(SQL_CHAT_LATEST, [platform, chat_id, _timestamp("since", since)])
        return {row["user_id"]: _from_row(row) for row in rows}

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
        """Replace the mood of one of this user's rows created since `since`, in place."""
        _require_text("emotion", emotion)
        where = [row_id, platform, user_id, _timestamp("since", since)]
        async with self.transaction() as conn:
            # FOR UPDATE: two corrections of one row on two replicas apply one after the other.
            cursor = await conn.execute(pg(SQL_OWN_RECENT_ENTRY) + " FOR UPDATE", where)
            row = await cursor.fetchone()
            if row is None:
                return None
            before = _from_row(row)
            await conn.execute(pg(SQL_CORRECT), correction_params(before, emotion, at))
        return before

    async def correction_stats(self, since: datetime | None = None) -> CorrectionStats:
        """How often people corrected the model since `since` (all time when None)."""
        sql, args = correction_stats_sql(since)
        return correction_stats_from(await self._rows(sql, args))

    async def recent_track_ids(self, platform: str, user_id: str, n: int) -> list[str]:
        """The Spotify ids of the last `n` tracks recommended to a user, newest first."""
        if not (limit := _tracks_limit(n)):
            return []
        rows = await self._rows(SQL_RECENT_TRACKS, [platform, user_id, limit])
        return [row["track_id"] for row in rows]

    async def remember_tracks(
        self, platform: str, user_id: str, track_ids: Sequence[str], at: datetime
    ) -> None:
        """Note the tracks just recommended to a user (keeping their latest few hundred)."""
        rows = _checked_tracks(platform, user_id, track_ids, at)
        async with self.transaction() as conn, conn.cursor() as cursor:
            await cursor.executemany(pg(SQL_REMEMBER_TRACK), rows)
            await cursor.execute(pg(SQL_TRIM_TRACKS), _trim_tracks_params(platform, user_id))

    async def forget_user(self, platform: str, user_id: str) -> int:
        """Delete a user's moods in every chat of `platform`, preferences and track memory."""
        async with self.transaction() as conn:
            deleted = await conn.execute(pg(SQL_FORGET_MOODS), [platform, user_id])
            await conn.execute(pg(SQL_FORGET_PREFERENCES), [platform, user_id])
            await conn.execute(pg(SQL_FORGET_TRACKS), [platform, user_id])
            if platform == "telegram":  # the webhook inbox holds their messages for a day
                await conn.execute("DELETE FROM telegram_inbox WHERE user_id = %s", [user_id])
        log.info("Forgot %d moods of %s:%s", deleted.rowcount, platform, user_id)
        return deleted.rowcount

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Delete every entry created before `cutoff`; 0 while another replica is purging."""
        cutoff_text = _timestamp("cutoff", cutoff)
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(%s) AS mine", [RETENTION_LOCK]
            )
            lock = await cursor.fetchone()
            if not (lock and lock["mine"]):
                log.info("Retention: another replica is purging; skipped this round")
                return 0
            deleted = await conn.execute(pg(SQL_DELETE_OLDER), [cutoff_text])
            await conn.execute(pg(SQL_DELETE_OLDER_TRACKS), [cutoff_text])
        log.info("Deleted %d moods older than %s", deleted.rowcount, cutoff)
        return deleted.rowcount

    async def get_preferences(self, platform: str, user_id: str) -> Preferences:
        """Return a user's preferences, or the defaults when they have none."""
        rows = await self._rows(SQL_GET_PREFERENCES, [platform, user_id])
        return Preferences(**rows[0]) if rows else Preferences()

    async def set_preferences(
        self,
        platform: str,
        user_id: str,
        *,
        mode: str | _Unset = _UNSET,
        genre: str | _Unset | None = _UNSET,
    ) -> Preferences:
        """Change only the given preferences (genre=None clears it); returns the result."""
        mode, genre = _checked_preferences(platform, user_id, mode, genre)
        async with self.transaction() as conn:
            # Two replicas changing one user's mode and genre at once must not lose either:
            # the row lock makes the read-merge-write below one step.
            await conn.execute(
                "INSERT INTO preferences (platform, user_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING",
                [platform, user_id],
            )
            cursor = await conn.execute(
                pg(SQL_GET_PREFERENCES) + " FOR UPDATE", [platform, user_id]
            )
            current = await cursor.fetchone()
            updated = _merged(Preferences(**current) if current else Preferences(), mode, genre)
            await conn.execute(
                pg(SQL_SET_PREFERENCES), [platform, user_id, updated.mode, updated.genre]
            )
        return updated

    async def probe(self) -> str | None:
        """None when the server lends a connection and takes writes now, else why not."""
        try:
            async with self._pool.connection(timeout=1.0) as conn:
                cursor = await conn.execute("SELECT pg_is_in_recovery() AS standby")
                row = await cursor.fetchone()
        except PoolTimeout:
            return "no connection to PostgreSQL within 1 s"
        except psycopg.Error as exc:
            return str(exc).strip() or type(exc).__name__
        if row and row["standby"]:
            return "PostgreSQL is a read-only standby"
        return None

    # --- moodbot db copy ------------------------------------------------------------------------

    async def _copy_rows(self, table: str, rows: list[dict[str, Any]], key: str = "(id)") -> int:
        """Insert rows as they are, skipping keys already present; returns how many went in."""
        columns = list(rows[0])
        values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(rows))
        # Tables keyed by an identity column keep the file's ids (that is what makes a rerun
        # recognise its rows).
        overriding = " OVERRIDING SYSTEM VALUE" if key == "(id)" else ""
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}){overriding} VALUES {values}"
            f" ON CONFLICT {key} DO NOTHING"
        )
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, [row[c] for row in rows for c in columns])
            return cursor.rowcount

    async def _copy_moods(self, rows: list[dict[str, Any]]) -> int:
        ids = [row["id"] for row in rows]
        async with self.transaction() as conn:
            cursor = await conn.execute(
                "SELECT id, platform, user_id, created_at FROM moods WHERE id = ANY(%s)", [ids]
            )
            present = {row["id"]: row for row in await cursor.fetchall()}
        for row in rows:
            there = present.get(row["id"])
            if there and (there["platform"], there["user_id"], there["created_at"]) != (
                row["platform"],
                row["user_id"],
                _datetime(row["created_at"]),
            ):
                raise CopyConflict(
                    f"mood {row['id']} in {self.url} is not the file's: copy into an empty"
                    " database, or one this file was copied into before"
                )
        return await self._copy_rows("moods", rows)

    async def aclose(self) -> None:
        """Close every pooled connection; safe to call twice."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# --- moodbot db copy -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyReport:
    """What `moodbot db copy` did: rows copied now, rows that were already there."""

    moods_copied: int
    moods_present: int
    preferences_copied: int
    preferences_present: int
    tracks_copied: int = 0  # the "no repeats" memory of recommended tracks
    tracks_present: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class CopyConflict(Exception):
    """The PostgreSQL database holds other moods under the ids being copied."""


async def copy_from_sqlite(sqlite_path: Path, url: str, *, batch: int = 1000) -> CopyReport:
    """Copy a SQLite history into PostgreSQL; running it again copies nothing twice.

    Moods keep their ids, so a second run recognises what it copied; preferences already in
    PostgreSQL are newer than the file's and are kept. A row with a copied id but other
    content means the target is not a copy of this file: refused before anything is written
    for that batch.
    """
    history = await PostgresHistory.open(url)  # creates or updates the schema
    try:
        with HistoryStore(sqlite_path) as store:
            moods = await _copy_table(store, "moods", history._copy_moods, batch)
            prefs = await _copy_table(
                store,
                "preferences",
                partial(history._copy_rows, "preferences", key=KEY_PREFS),
                batch,
            )
            tracks = await _copy_table(
                store,
                "recommended_tracks",
                partial(history._copy_rows, "recommended_tracks"),
                batch,
            )
        async with history.transaction() as conn:
            for table in ("moods", "recommended_tracks"):
                # New rows must get ids after the copied ones.
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT MAX(id) FROM {table}), 1))"
                )
    finally:
        await history.aclose()
    return CopyReport(*moods, *prefs, *tracks)


async def _copy_table(
    store: HistoryStore,
    table: str,
    insert: Callable[[list[dict[str, Any]]], Awaitable[int]],
    batch: int,
) -> tuple[int, int]:
    """(rows copied, rows already there) for one table, batch by batch."""
    copied = present = 0
    for chunk in store.rows(table, batch):
        done = await insert(chunk)
        copied, present = copied + done, present + len(chunk) - done
    return copied, present


KEY_PREFS = "(platform, user_id)"  # the preferences' key: an ON CONFLICT target
