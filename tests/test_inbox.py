"""The durable Telegram webhook inbox against a real PostgreSQL server (bot/inbox.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import psycopg
import pytest

from bot.core import MoodService
from bot.history_pg import PostgresHistory
from bot.inbox import TelegramInbox
from bot.music import MusicRecommender
from bot.transports.telegram_bot import TelegramTransport
from ml.engine import EmotionEngine
from tests.fakes.telegram import FakeTelegram, TgUser

ALICE = TgUser(1001, "Alice")
BOB = TgUser(1002, "Bob")
SECRET = "inbox-secret"


@pytest.fixture
async def history(postgres_url: str) -> AsyncIterator[PostgresHistory]:
    history = await PostgresHistory.open(postgres_url)
    yield history
    await history.aclose()


def inbox_of(history: PostgresHistory, owner: str, lease_s: float = 30) -> TelegramInbox:
    return TelegramInbox(history, owner=owner, lease_s=lease_s)


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT update_id, user_id, payload IS NULL, done_at IS NULL, attempts"
            " FROM telegram_inbox ORDER BY update_id"
        ).fetchall()


def text_update(update_id: int, user: TgUser, text: str = "hi") -> dict:
    message = {
        "message_id": update_id,
        "date": 0,
        "chat": {"id": user.id, "type": "private"},
        "from": user.to_dict(),
        "text": text,
    }
    if text.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text)}]
    return {"update_id": update_id, "message": message}


async def test_put_claim_done_and_duplicates(history: PostgresHistory, postgres_url: str) -> None:
    one, two = inbox_of(history, "replica-1"), inbox_of(history, "replica-2")
    assert await one.put(text_update(1, ALICE)) is True
    assert await two.put(text_update(1, ALICE)) is False  # Telegram delivered it again
    assert await one.put(text_update(2, BOB)) is True
    first = await one.claim(1)
    assert [(i.update_id, i.attempts) for i in first] == [(1, 1)]
    assert first[0].payload == text_update(1, ALICE)
    # SKIP LOCKED + lease: the other replica gets the other update, never the claimed one.
    assert [i.update_id for i in await two.claim(10)] == [2]
    assert await two.claim(10) == []
    await one.done(1)
    assert await one.pending() == 1
    # Done: the JSON is gone, the id stays so that a redelivery is still recognised.
    assert rows(postgres_url)[0] == (1, "1001", True, False, 1)
    assert await one.put(text_update(1, ALICE)) is False


async def test_a_dead_replicas_claims_go_to_another_when_the_lease_ends(
    history: PostgresHistory,
) -> None:
    dead, alive = inbox_of(history, "dead", lease_s=1), inbox_of(history, "alive")
    await dead.put(text_update(5, ALICE))
    assert [i.update_id for i in await dead.claim(5)] == [5]  # ... and then it dies
    assert await alive.claim(5) == []
    await asyncio.sleep(1.2)
    (taken,) = await alive.claim(5)
    assert (taken.update_id, taken.attempts) == (5, 2)


async def test_done_rows_are_purged_after_a_day(
    history: PostgresHistory, postgres_url: str
) -> None:
    inbox = inbox_of(history, "r")
    for update_id in (1, 2):
        await inbox.put(text_update(update_id, ALICE))
    await inbox.claim(2)
    await inbox.done(1)
    assert await inbox.purge() == 0  # done just now: kept for a day
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "UPDATE telegram_inbox SET done_at = now() - interval '25 hours'"
            " WHERE done_at IS NOT NULL"
        )
    assert await inbox.purge() == 1  # the done one; the pending one stays
    assert [row[0] for row in rows(postgres_url)] == [2]
    assert await inbox.purge(kept=timedelta(0)) == 0


async def test_forget_removes_the_users_inbox_rows(
    history: PostgresHistory, postgres_url: str
) -> None:
    inbox = inbox_of(history, "r")
    await inbox.put(text_update(1, ALICE))
    await inbox.put(text_update(2, BOB))
    await history.forget_user("telegram", "1001")
    assert [row[1] for row in rows(postgres_url)] == ["1002"]


# --- through the real Telegram transport ---------------------------------------------------------


@pytest.fixture
async def webhook_bot(
    fake: FakeTelegram, engine: EmotionEngine, history: PostgresHistory
) -> AsyncIterator[tuple[TelegramTransport, str]]:
    service = MoodService(engine, MusicRecommender(None), history)
    config = fake.bot_config(
        webhook_url="https://bot.example.org/hook", port=0, secret_token=SECRET
    )
    transport = TelegramTransport(service, config)
    await transport.start()
    assert transport.inbox is not None
    host, port = transport.webhook_address or ("", 0)
    try:
        yield transport, f"http://{host}:{port}/hook"
    finally:
        await transport.stop_intake()
        await transport.close(timeout=10)


async def test_a_redelivered_selfie_is_answered_and_recorded_once(
    fake: FakeTelegram,
    webhook_bot: tuple[TelegramTransport, str],
    history: PostgresHistory,
    postgres_url: str,
    astronaut_jpeg: bytes,
) -> None:
    _, endpoint = webhook_bot
    fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
    (update,) = fake.take_updates()
    statuses = await asyncio.gather(
        *(fake.deliver(endpoint, update, secret=SECRET) for _ in range(3))
    )
    assert statuses == [200, 200, 200]
    answer = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert "happy" in answer.text.lower() or answer.text
    await asyncio.sleep(1.0)  # room for a wrong second answer to show up
    assert len(fake.calls_to("sendMessage")) == 1
    assert len(await history.recent("telegram", str(ALICE.id))) == 1
    ((update_id, user_id, cleared, pending, attempts),) = rows(postgres_url)
    assert (update_id, user_id, cleared, pending, attempts) == (
        update["update_id"], "1001", True, False, 1,
    )  # fmt: skip


async def test_the_inbox_holds_file_ids_never_photo_bytes(
    fake: FakeTelegram, history: PostgresHistory, postgres_url: str, astronaut_jpeg: bytes
) -> None:
    fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
    (update,) = fake.take_updates()
    await inbox_of(history, "r").put(update)
    with psycopg.connect(postgres_url) as conn:
        (payload,) = conn.execute("SELECT payload::text FROM telegram_inbox").fetchone()
    assert json.loads(payload) == update
    assert len(payload) < 4000 and "file_id" in payload


async def test_without_the_database_updates_are_still_answered(
    fake: FakeTelegram, webhook_bot: tuple[TelegramTransport, str], history: PostgresHistory
) -> None:
    _, endpoint = webhook_bot
    await history.aclose()  # the database is gone
    status = await fake.deliver(endpoint, text_update(9, ALICE, "/history"), secret=SECRET)
    assert status == 200  # handled in memory, as without an inbox
    answer = await fake.wait_for("sendMessage", chat_id=ALICE.id)
    assert answer.text == "Your history is not available right now. Please try again later."
    assert await fake.deliver(endpoint, {"nonsense": True}, secret=SECRET) == 400
    assert await fake.deliver(endpoint, text_update(9, ALICE), secret="wrong") == 403


async def test_healthz_checks_the_postgres_database_it_really_uses(
    engine: EmotionEngine, history: PostgresHistory
) -> None:
    from bot.web import WebServer

    server = WebServer(MoodService(engine, MusicRecommender(None), history), port=0)
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["database"] == {"writable": True}
            await history.aclose()  # the database is gone for this replica
            async with http.get(f"{url}/healthz") as response:
                body = await response.json()
        assert response.status == 503 and body["database"]["writable"] is False
        assert "closed" in body["database"]["error"]
    finally:
        await server.close(5)
