"""Per-user rate limiting: a token bucket per key, refilled continuously.

`RateLimiter` keeps the buckets in this process; `RedisRateLimiter` keeps them in Redis
(MOODBOT_REDIS_URL) so that the limit holds across replicas.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go ahead; when not, how long to wait and whether to say so."""

    allowed: bool
    retry_after: float = 0.0
    # Only the first refusal of a streak is worth a reply: answering every message of a
    # flood would itself run into the chat platform's own limits.
    first_refusal: bool = False

    @property
    def retry_after_s(self) -> int:
        """Whole seconds to wait, at least one."""
        return max(1, math.ceil(self.retry_after))


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: bool = False


class RateLimiter:
    """Allows `burst` requests at once per key, then `per_minute` on average."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        if per_minute <= 0:
            raise ValueError(f"per_minute must be positive, got {per_minute!r}")
        self.burst = burst
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[Hashable, _Bucket] = {}

    def check(self, key: Hashable) -> Verdict:
        """Take one token for `key` if there is one."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            bucket.warned = False
            return Verdict(allowed=True)
        first, bucket.warned = not bucket.warned, True
        return Verdict(
            allowed=False, retry_after=(1.0 - bucket.tokens) / self._rate, first_refusal=first
        )

    def _prune(self, now: float) -> None:
        # Memory stays bounded however many users write: full buckets carry no state.
        if len(self._buckets) < self._max_keys:
            return
        refill_s = self.burst / self._rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill_s]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            # Everyone is active: forget the longest-idle bucket (dicts keep insertion order,
            # and updated buckets are not moved, so this is approximate but bounded).
            del self._buckets[next(iter(self._buckets))]

    async def acquire(self, key: Hashable) -> Verdict:
        """check() as a coroutine: the interface the core uses for every limiter."""
        return self.check(key)

    async def aclose(self) -> None:
        """Nothing to close: the buckets live in this process."""


class Limiter(Protocol):
    """A per-user limit: RateLimiter in one process, RedisRateLimiter across replicas."""

    async def acquire(self, key: Hashable) -> Verdict: ...
    async def aclose(self) -> None: ...


# The same token bucket as RateLimiter, kept in a Redis hash per user and updated in one atomic
# script: two replicas taking a token at once cannot both take the last one. The clock is the
# Redis server's, so replicas with skewed clocks agree. A bucket left alone until it is full
# again carries no state and expires.
_TOKEN_BUCKET = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'warned')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
local warned = state[3] == '1'
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed, first, retry = 0, 0, 0
if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
    warned = false
else
    if not warned then first = 1 end
    warned = true
    retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now),
           'warned', warned and '1' or '0')
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, first, tostring(retry)}
"""

DEFAULT_REDIS_TIMEOUT_S = 0.25
# After a failure, Redis is left alone this long: a dead server costs one timeout per
# interval, not one per message.
REDIS_RETRY_AFTER_S = 5.0


class RedisRateLimiter:
    """RateLimiter's semantics with the buckets in Redis, shared by every replica.

    Redis down or slower than `timeout_s`: the per-process `fallback` decides instead (logged
    once per outage), so the bot keeps answering; Redis is tried again after
    REDIS_RETRY_AFTER_S.
    """

    def __init__(
        self,
        url: str,
        burst: int,
        per_minute: float,
        *,
        timeout_s: float = DEFAULT_REDIS_TIMEOUT_S,
        prefix: str = "moodbot:ratelimit",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fallback = RateLimiter(burst, per_minute, clock=clock)
        self.timeout_s = timeout_s
        self._prefix = prefix
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._script = self._client.register_script(_TOKEN_BUCKET)
        self._args = [burst, per_minute / 60.0]
        self._down_until = 0.0
        self._degraded = False

    async def acquire(self, key: Hashable) -> Verdict:
        """Take one token for `key` from the shared bucket, or the local one during an outage."""
        if self._clock() < self._down_until:
            return self.fallback.check(key)
        try:
            async with asyncio.timeout(self.timeout_s):
                allowed, first, retry = await self._script(keys=[self._key(key)], args=self._args)
        except (TimeoutError, OSError, RedisError) as exc:
            self._went_down(exc)
            return self.fallback.check(key)
        if self._degraded:
            self._degraded = False
            log.info("Redis is back: rate limits are shared across replicas again")
        return Verdict(allowed=bool(allowed), retry_after=float(retry), first_refusal=bool(first))

    def _key(self, key: Hashable) -> str:
        parts = key if isinstance(key, tuple) else (key,)
        return ":".join([self._prefix, *map(str, parts)])

    def _went_down(self, exc: BaseException) -> None:
        self._down_until = self._clock() + REDIS_RETRY_AFTER_S
        if not self._degraded:
            self._degraded = True
            log.warning(
                "Redis unavailable (%s): per-process rate limits until it is back",
                type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
            )

    async def aclose(self) -> None:
        await self._client.aclose()
