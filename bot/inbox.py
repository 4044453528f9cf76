"""A durable inbox for Telegram webhook updates, in PostgreSQL, shared by every replica.

Without it an update is lost when the replica that acknowledged it dies before answering.
With it (webhook mode and a postgresql:// MOODBOT_DB), the webhook endpoint writes the update
to `telegram_inbox` and only then answers Telegram 200; any replica claims pending rows
(`FOR UPDATE SKIP LOCKED`, with a lease), handles them, and marks them done. A replica killed
mid-way leaves its claims to the others once the lease runs out.

What this guarantees, and what it does not:
- an acknowledged update is handled at least once, and a redelivered one (same update_id) is
  handled once;
- a selfie's mood is stored once per update even when the update is handled twice (moods are
  keyed by the update: MoodEntry.request_id);
- while the database is down, updates cannot be stored: each is handled in memory by the
  replica that received it (answered politely, as the history is down too), and is lost if
  that replica dies before answering;
- a *reply* can still be sent twice: a replica that dies after sending the answer but before
  marking the row done leaves it to be handled again when the lease runs out. Telegram offers
  no way to make sending idempotent; the window is the time between send and mark.

Rows hold the update's JSON (text, file ids, names), never photo bytes: the photo is
downloaded when the update is handled. The JSON is cleared when the row is done, the row itself
(update_id, user_id) is deleted a day later (DONE_KEPT), and /forget deletes a user's rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.history_pg import PostgresHistory

log = logging.getLogger(__name__)

DONE_KEPT = timedelta(days=1)  # long enough to recognise Telegram's redeliveries


@dataclass(frozen=True)
class InboxItem:
    """One claimed update."""

    update_id: int
    payload: dict[str, Any]
    attempts: int  # 1 the first time it is handled, more after a lease ran out


def _user_of(update: dict[str, Any]) -> str | None:
    """The sender's id, for /forget; None for updates without one."""
    for kind in ("message", "edited_message", "callback_query"):
        sender = (update.get(kind) or {}).get("from") or {}
        if "id" in sender:
            return str(sender["id"])
    return None


class TelegramInbox:
    """The inbox table, on the history's connection pool."""

    def __init__(self, history: PostgresHistory, *, owner: str, lease_s: float) -> None:
        self._history = history
        self.owner = owner  # who holds a claim: this replica (host and pid)
        self.lease_s = lease_s

    async def put(self, update: dict[str, Any]) -> bool:
        """Store an update before it is acknowledged; False when it was already there.

        HistoryUnavailable when the database cannot take it (the transport then handles the
        update in memory, as without an inbox).
        """
        update_id = int(update["update_id"])
        async with self._history.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO telegram_inbox (update_id, user_id, payload) VALUES (%s, %s, %s)"
                " ON CONFLICT (update_id) DO NOTHING",
                [update_id, _user_of(update), json.dumps(update)],
            )
            fresh = cursor.rowcount == 1
        if not fresh:
            log.info("Telegram delivered update %d again; it is handled once", update_id)
        return fresh

    async def claim(self, limit: int) -> list[InboxItem]:
        """Take up to `limit` pending updates, oldest first, that nobody holds a live lease on."""
        async with self._history.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE telegram_inbox SET claimed_by = %s, attempts = attempts + 1,"
                " lease_until = now() + make_interval(secs => %s)"
                " WHERE update_id IN ("
                "  SELECT update_id FROM telegram_inbox"
                "  WHERE done_at IS NULL AND (lease_until IS NULL OR lease_until < now())"
                "  ORDER BY received_at, update_id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING update_id, payload, attempts",
                [self.owner, self.lease_s, limit],
            )
            rows = await cursor.fetchall()
        items = [InboxItem(r["update_id"], r["payload"], r["attempts"]) for r in rows]
        for item in items:
            if item.attempts > 1:
                log.warning(
                    "Telegram update %d is handled again (attempt %d): its first handler"
                    " did not finish in time",
                    item.update_id,
                    item.attempts,
                )
        return sorted(items, key=lambda item: item.update_id)

    async def done(self, update_id: int) -> None:
        """Mark an update handled; its JSON goes, its id stays a day for deduplication."""
        async with self._history.transaction() as conn:
            await conn.execute(
                "UPDATE telegram_inbox SET done_at = now(), payload = NULL, lease_until = NULL"
                " WHERE update_id = %s",
                [update_id],
            )

    async def purge(self, kept: timedelta = DONE_KEPT) -> int:
        """Delete the rows done longer than `kept` ago; returns how many went."""
        async with self._history.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM telegram_inbox WHERE done_at < now() - make_interval(secs => %s)",
                [kept.total_seconds()],
            )
        return cursor.rowcount

    async def pending(self) -> int:
        """Updates not yet done (claimed or not)."""
        async with self._history.transaction() as conn:
            cursor = await conn.execute(
                "SELECT COUNT(*) AS n FROM telegram_inbox WHERE done_at IS NULL"
            )
            row = await cursor.fetchone()
        return int(row["n"]) if row else 0

    async def release(self, update_id: int) -> None:
        """Give a claimed update back at once (this replica is shutting down)."""
        async with self._history.transaction() as conn:
            await conn.execute(
                "UPDATE telegram_inbox SET lease_until = NULL, claimed_by = NULL,"
                " attempts = attempts - 1 WHERE update_id = %s AND done_at IS NULL",
                [update_id],
            )
