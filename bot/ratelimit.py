"""Per-user rate limiting: a token bucket per key, refilled continuously."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


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
