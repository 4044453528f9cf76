"""Telegram failing while the bot sends: 5xx, flood control (429 + retry_after) and timeouts.

The real python-telegram-bot Application talks to the fake Bot API server on 127.0.0.1, which
fails chosen calls. Every answer must arrive exactly once: retried while it surely did not
arrive, never sent a second time when it may have.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.core import MoodService
from bot.history import AsyncHistory, MoodEntry
from bot.music import MusicRecommender
from bot.ratelimit import RateLimiter
from bot.transports.telegram_bot import TelegramTransport, surely_undelivered
from ml.engine import EmotionEngine
from tests.fakes.telegram import Call, FakeTelegram, TgUser

pytestmark = pytest.mark.slow

ALICE = TgUser(1001, "Alice")
HELP_START = "Send me a selfie"
SORRY = "Sorry, something went wrong on my side. Please try again in a moment."
LOGGER = "bot.transports.telegram_bot"


@pytest.fixture
def service(engine: EmotionEngine, history: AsyncHistory) -> MoodService:
    music = MusicRecommender(None, rng=random.Random(7))
    return MoodService(engine, music, history, limiter=RateLimiter(burst=50, per_minute=600))


class Bot:
    """The Telegram transport under test, stoppable mid-test so that every call is counted."""

    def __init__(self, fake: FakeTelegram, service: MoodService) -> None:
        config = fake.bot_config(
            poll_timeout_s=1,
            read_timeout_s=1.0,
            send_attempts=3,
            send_backoff_s=0.05,
            max_retry_after_s=5,
        )
        self.transport = TelegramTransport(service, config)
        self.running = False

    async def start(self) -> None:
        await self.transport.start()
        self.running = True

    async def stop(self) -> None:
        """Stop taking updates and wait until every update in hand is finished."""
        if self.running:
            self.running = False
            await self.transport.stop_intake()
            await self.transport.close(timeout=15)


@pytest.fixture
async def bot(fake: FakeTelegram, service: MoodService) -> AsyncIterator[Bot]:
    bot = Bot(fake, service)
    await bot.start()
    yield bot
    await bot.stop()


def sends(fake: FakeTelegram, method: str = "sendMessage") -> list[Call]:
    return [c for c in fake.calls_to(method) if c.chat_id == ALICE.id]


def delivered(fake: FakeTelegram, method: str = "sendMessage") -> list[str]:
    return [c.text for c in sends(fake, method) if c.delivered]


async def first_delivered(fake: FakeTelegram, method: str = "sendMessage") -> Call:
    while True:
        call = await fake.wait_for(method, chat_id=ALICE.id, timeout=20)
        if call.delivered:
            return call


# --- 5xx and flood control: retried, delivered once -----------------------------------------------


@pytest.mark.parametrize(
    ("status", "description"),
    [(500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable")],
)
async def test_server_errors_are_retried_and_answered_once(
    bot: Bot,
    fake: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
    status: int,
    description: str,
) -> None:
    fake.fail("sendMessage", status=status, description=description, times=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        await first_delivered(fake)
        await bot.stop()
    attempts = sends(fake)
    assert len(attempts) == 3 and [c.delivered for c in attempts] == [False, False, True]
    assert len({c.text for c in attempts}) == 1 and attempts[0].text.startswith(HELP_START)
    assert delivered(fake) == [attempts[0].text]  # no "something went wrong" on top
    retries = [r.message for r in caplog.records if "retrying in" in r.message]
    assert len(retries) == 2 and all(f"sendMessage to chat {ALICE.id}" in m for m in retries)


async def test_flood_control_waits_retry_after_then_answers_once(
    bot: Bot, fake: FakeTelegram
) -> None:
    fake.fail(
        "sendMessage", status=429, description="Too Many Requests: retry after 1", retry_after=1
    )
    fake.send_text(ALICE, fake.private(ALICE), "/help")
    answer = await first_delivered(fake)
    await bot.stop()
    refused, accepted = sends(fake)
    assert not refused.delivered and accepted is answer
    # Honouring retry_after is the point: sending sooner only extends the flood ban.
    assert accepted.at - refused.at >= 1.0
    assert delivered(fake) == [answer.text]


async def test_selfie_answer_survives_failures_and_is_stored_once(
    bot: Bot, fake: FakeTelegram, history: AsyncHistory, astronaut_jpeg: bytes
) -> None:
    fake.fail("sendMessage", status=502, description="Bad Gateway")
    fake.fail("sendMessage", status=429, description="Too Many Requests", retry_after=1)
    fake.send_photo(ALICE, fake.private(ALICE), astronaut_jpeg)
    answer = await first_delivered(fake)
    await bot.stop()
    assert answer.text.startswith("You look happy")
    assert [c.delivered for c in sends(fake)] == [False, False, True]
    assert delivered(fake) == [answer.text]
    # One analysis, one row: the retries resend the answer, they do not redo the update.
    assert len(fake.downloads) == 1
    assert [e.emotion for e in await history.recent("telegram", str(ALICE.id))] == ["happy"]


async def test_chart_photo_is_retried_too(
    bot: Bot, fake: FakeTelegram, history: AsyncHistory
) -> None:
    entry = MoodEntry("telegram", str(ALICE.id), str(ALICE.id), "sad", 0.8, 1, datetime.now(UTC))
    await history.record(entry)
    fake.fail("sendPhoto", status=429, description="Too Many Requests", retry_after=1)
    fake.fail("sendPhoto", status=500)
    fake.send_text(ALICE, fake.private(ALICE), "/history")
    chart = await first_delivered(fake, "sendPhoto")
    await bot.stop()
    assert chart.files["photo"].startswith(b"\x89PNG")
    assert [c.delivered for c in sends(fake, "sendPhoto")] == [False, False, True]
    assert len(delivered(fake)) == 1 and delivered(fake)[0].startswith("Your last 1 moods:")


# --- bounded: give up with a clear line ----------------------------------------------------------


async def test_retries_are_bounded_and_giving_up_is_logged(
    bot: Bot, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", status=500, times=3)  # send_attempts is 3
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        sorry = await first_delivered(fake)
        fake.send_text(ALICE, fake.private(ALICE), "/help")  # and the bot is still serving
        after = await first_delivered(fake)
        await bot.stop()
    assert [c.delivered for c in sends(fake)] == [False, False, False, True, True]
    assert sorry.text == SORRY and after.text.startswith(HELP_START)
    (gave_up,) = [r for r in caplog.records if r.message.startswith("Giving up")]
    assert gave_up.levelno == logging.ERROR
    assert gave_up.message.startswith(
        f"Giving up on Telegram sendMessage to chat {ALICE.id} after 3 attempt(s): "
    )


async def test_retry_after_longer_than_the_cap_is_not_waited_for(
    bot: Bot, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail("sendMessage", status=429, description="Too Many Requests", retry_after=3600)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        sorry = await first_delivered(fake)
        await bot.stop()
    assert sorry.text == SORRY and len(sends(fake)) == 2
    assert any("after 1 attempt(s): Flood control exceeded" in r.message for r in caplog.records)


# --- timeouts: maybe delivered, so never sent twice ----------------------------------------------


async def test_read_timeout_after_delivery_is_not_sent_again(
    bot: Bot, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # Telegram delivers the message, but its answer comes after the bot's 1 s read timeout.
    fake.stall("sendMessage", seconds=2.5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fake.send_text(ALICE, fake.private(ALICE), "/help")
        await first_delivered(fake)
        await bot.stop()
    (only,) = sends(fake)
    assert only.text.startswith(HELP_START)  # the person got the answer, once
    assert not any(r.message == "Telegram update failed" for r in caplog.records)
    assert any("timed out; it may have been delivered" in r.message for r in caplog.records)


def _chained(error: Exception, cause: Exception) -> Exception:
    error.__cause__ = cause
    return error


def test_only_surely_undelivered_failures_are_retried() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/botX/sendMessage")
    retried = [
        RetryAfter(3),
        NetworkError("Internal Server Error (500)"),  # a 5xx answer: nothing was done
        NetworkError("Bad Gateway"),
        _chained(NetworkError("httpx.ConnectError"), httpx.ConnectError("refused")),
        _chained(TimedOut(), httpx.ConnectTimeout("connect", request=request)),
        _chained(TimedOut(), httpx.PoolTimeout("pool", request=request)),
    ]
    not_retried = [
        _chained(TimedOut(), httpx.ReadTimeout("read", request=request)),  # maybe delivered
        _chained(TimedOut(), httpx.WriteTimeout("write", request=request)),
        _chained(NetworkError("httpx.ReadError"), httpx.ReadError("reset", request=request)),
        BadRequest("Bad Request: message is too long"),
        Forbidden("Forbidden: bot was blocked by the user"),
    ]
    assert [surely_undelivered(e) for e in retried] == [True] * len(retried)
    assert [surely_undelivered(e) for e in not_retried] == [False] * len(not_retried)
