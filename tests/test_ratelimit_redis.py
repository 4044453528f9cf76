"""Rate limits in Redis against a real server: today's semantics, shared, atomic, and outages."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from bot.ratelimit import Limiter, RateLimiter, RedisRateLimiter
from tests.servers import RedisServer, free_port

MakeLimiter = Callable[..., Limiter]


@pytest.fixture
async def make_redis(redis_url: str) -> AsyncIterator[MakeLimiter]:
    """RedisRateLimiters on the test's Redis; each is a replica with its own connection."""
    made: list[RedisRateLimiter] = []

    def make(burst: int, per_minute: float) -> RedisRateLimiter:
        # A generous timeout: on a loaded test machine 0.25 s can pass, and the fallback
        # (tested below) would then decide instead of Redis.
        limiter = RedisRateLimiter(redis_url, burst, per_minute, timeout_s=2.0)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


@pytest.fixture(params=["in-process", "redis"])
def make_limiter(request: pytest.FixtureRequest) -> MakeLimiter:
    """The same semantics checked on both limiters."""
    if request.param == "in-process":
        return RateLimiter
    return request.getfixturevalue("make_redis")


async def test_burst_then_one_warning_per_flood(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(3, 1)  # one token a minute: nothing refills during the test
    assert [(await limiter.acquire("a")).allowed for _ in range(3)] == [True] * 3
    first = await limiter.acquire("a")
    assert (first.allowed, first.first_refusal) == (False, True)
    assert 55 <= first.retry_after <= 60 and first.retry_after_s <= 60
    second = await limiter.acquire("a")
    assert (second.allowed, second.first_refusal) == (False, False)
    assert (await limiter.acquire("b")).allowed  # another user has their own bucket


async def test_tokens_come_back_and_a_new_flood_is_warned_again(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(1, 600)  # a token every 0.1 s
    assert (await limiter.acquire("a")).allowed
    assert (await limiter.acquire("a")).first_refusal
    await asyncio.sleep(0.25)
    assert (await limiter.acquire("a")).allowed
    refused = await limiter.acquire("a")
    assert refused.first_refusal and 0 < refused.retry_after <= 0.1


async def test_the_limit_holds_across_replicas(make_redis: MakeLimiter) -> None:
    one, two = make_redis(4, 1), make_redis(4, 1)
    verdicts = [await (one if i % 2 else two).acquire(("telegram", "42")) for i in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 4 + [False] * 2
    # One "slow down" per flood across the replicas too, not one per replica.
    assert [v.first_refusal for v in verdicts[4:]] == [True, False]


async def test_taking_tokens_is_atomic(make_redis: MakeLimiter) -> None:
    replicas = [make_redis(10, 1) for _ in range(3)]
    verdicts = await asyncio.gather(*(replicas[i % 3].acquire("u") for i in range(60)))
    assert sum(v.allowed for v in verdicts) == 10
    assert sum(v.first_refusal for v in verdicts) == 1


# --- outages -------------------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a Redis that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("where", ["refused", "hanging"])
async def test_redis_down_or_slow_falls_back_and_logs_once(
    where: str, silent_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = silent_server if where == "hanging" else f"redis://127.0.0.1:{free_port()}/0"
    limiter = RedisRateLimiter(url, 2, 1, timeout_s=0.2)
    caplog.set_level(logging.WARNING, logger="bot.ratelimit")
    try:
        started = time.monotonic()
        verdicts = [await limiter.acquire("a") for _ in range(4)]
        assert time.monotonic() - started < 2  # one timeout, then no more waiting
    finally:
        await limiter.aclose()
    # The per-process limiter decided, with the same semantics.
    assert [(v.allowed, v.first_refusal) for v in verdicts] == [
        (True, False), (True, False), (False, True), (False, False),
    ]  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1


async def test_redis_killed_then_back(
    redis_session: RedisServer,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not redis_session.private:
        pytest.skip("killing the server needs the private one, not MOODBOT_TEST_REDIS_URL")
    monkeypatch.setattr("bot.ratelimit.REDIS_RETRY_AFTER_S", 0.2)
    caplog.set_level(logging.INFO, logger="bot.ratelimit")
    one, two = (RedisRateLimiter(redis_url, 2, 1, timeout_s=1.0) for _ in range(2))
    try:
        assert (await one.acquire("a")).allowed and (await two.acquire("a")).allowed
        assert not (await one.acquire("a")).allowed  # shared: the bucket is empty
        redis_session.kill()
        # Each replica now has its own bucket: answers go on, the limit is per process.
        assert (await one.acquire("a")).allowed and (await two.acquire("a")).allowed
        redis_session.start()  # empty: nothing persisted
        await asyncio.sleep(0.3)
        assert [(await one.acquire("b")).allowed for _ in range(3)] == [True, True, False]
        assert not (await two.acquire("b")).allowed  # shared again
    finally:
        await one.aclose()
        await two.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("Redis unavailable" in m for m in messages) == 2  # once per replica
    assert sum("Redis is back" in m for m in messages) == 2
