"""Limits on the domain checks the HTTP API starts: a rate (token bucket) and a number at once (slots).

Neither ever waits: a check over a limit is refused at once with the seconds after which
asking again may succeed (the API's `429 Retry-After`, RFC 6585 §4), so no request queues
without bound on the ingress' event loop. Both take a clock (seconds, monotonic) so tests
step time instead of sleeping.
"""

import math
import time
from collections.abc import Callable

type Clock = Callable[[], float]


class LimitExceeded(Exception):
    """Refused by a limit; `retry_after` is a whole number of seconds, at least 1."""

    def __init__(self, reason: str, retry_after: float, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = max(1, math.ceil(round(retry_after, 6)))  # rounded: 10.000000001 s of float noise is 10
        self.detail = detail


class RateLimited(LimitExceeded):
    """The token bucket is empty."""


class Busy(LimitExceeded):
    """Every check slot is taken."""


class TokenBucket:
    """`per_minute` tokens a minute, at most `burst` saved up; `take()` spends one or raises RateLimited."""

    def __init__(self, per_minute: float, burst: int, clock: Clock = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1.0:
            wait = (1.0 - self._tokens) / self._rate
            raise RateLimited(
                "rate_limited",
                wait,
                f"too many domain checks: at most {self._rate * 60:g} a minute (KUBEMTA_API_CHECKS_PER_MINUTE)",
            )
        self._tokens -= 1.0


class CheckSlots:
    """At most `size` checks at once: `acquire()` takes a slot or raises Busy; `release()` gives it back."""

    def __init__(self, size: int, retry_after: float) -> None:
        self._size = size
        self._used = 0
        self._retry_after = retry_after

    @property
    def in_use(self) -> int:
        """Slots taken now."""
        return self._used

    def acquire(self) -> None:
        if self._used >= self._size:
            raise Busy(
                "busy",
                self._retry_after,
                f"{self._size} domain checks are running already (KUBEMTA_API_MAX_CONCURRENT_CHECKS)",
            )
        self._used += 1

    def release(self) -> None:
        self._used = max(0, self._used - 1)
