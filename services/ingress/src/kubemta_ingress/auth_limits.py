"""Failed-AUTH bookkeeping: failures per key in a sliding window, in a table that stays bounded without
dropping lockouts first, and the verifications in flight per key.

`FailureLimiter` counts the failures of each key (a client IP or /64, or a username) within
`window` seconds; a key with `limit` failures is locked until enough of them age out. The
table holds at most `max_keys` keys (memory: about 350 bytes per key at 5 failures). When a
new key finds it full, room is made in this order:

1. keys whose failures all aged out (they hold nothing),
2. unlocked keys, least recently failed first (they lose a count below the limit),
3. only when every remaining key is locked: the locks that end soonest.

So an attacker rotating keys cannot evict a lockout while the table holds any key that is
not locked, and the table never grows past its bound. The price of step 3: an attacker
controlling more client addresses than `max_keys` within one window shortens the lockouts of
the oldest of them (each lost lock is logged). The usernames' table never gets there: only
usernames in the users file are counted (auth.py), so its size is bounded by the file.

Moving the password check off the event loop lets several checks of one key run at once;
left alone, a client opening many connections could make all its guesses before the first
failure is counted. `FailureLimiter.admits` therefore counts checks in flight as possible
failures: a key near its limit gets one check at a time, a key far from it many.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

ROOM_FRACTION = 10  # a full table is cut to 90% of its bound at once, so making room is rare


class FailureLimiter:
    """Failures per key within a sliding window, at most `max_keys` keys, and checks in flight per key."""

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        max_keys: int,
        name: str = "keys",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._window = window
        self._max_keys = max_keys
        self._name = name
        self._clock = clock
        self._failures: dict[str, list[float]] = {}  # oldest failure first
        self._in_flight: dict[str, int] = {}

    def __len__(self) -> int:
        """Keys with failures remembered (some may have aged out since)."""
        return len(self._failures)

    def count(self, key: str) -> int:
        """Failures of `key` within the window."""
        times = self._failures.get(key)
        if times is None:
            return 0
        return self._prune(key, times, self._clock() - self._window)

    def locked(self, key: str) -> bool:
        """True when `key` reached the limit within the window."""
        return self.count(key) >= self.limit

    def record(self, key: str) -> int:
        """Count one failure of `key`; the number of failures within the window, this one included."""
        count = self.count(key)
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._make_room()
        self._failures.setdefault(key, []).append(self._clock())
        return count + 1

    def clear(self, key: str) -> None:
        """Forget the failures of `key`."""
        self._failures.pop(key, None)

    def admits(self, key: str) -> bool:
        """True when one more check of `key` may start: none in flight, or all of them failing stays below the limit."""
        in_flight = self._in_flight.get(key, 0)
        return in_flight == 0 or self.count(key) + in_flight < self.limit

    def begin(self, key: str) -> None:
        """A check of `key` started (see `admits`)."""
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def end(self, key: str) -> None:
        """A check of `key` ended (its failure, if any, is recorded already)."""
        remaining = self._in_flight.get(key, 0) - 1
        if remaining > 0:
            self._in_flight[key] = remaining
        else:
            self._in_flight.pop(key, None)

    def _prune(self, key: str, times: list[float], horizon: float) -> int:
        aged = 0
        while aged < len(times) and times[aged] <= horizon:
            aged += 1
        if aged:
            del times[:aged]
        if not times:
            del self._failures[key]
        return len(times)

    def _make_room(self) -> None:
        """Expired keys go, then unlocked ones (least recently failed first), then the locks ending soonest."""
        target = self._max_keys - max(1, self._max_keys // ROOM_FRACTION)
        horizon = self._clock() - self._window
        unlocked: list[tuple[float, str]] = []
        locked: list[tuple[float, str]] = []
        for key, times in list(self._failures.items()):
            count = self._prune(key, times, horizon)
            if count >= self.limit:
                locked.append((times[-self.limit], key))  # the lock ends when this failure ages out
            elif count:
                unlocked.append((times[-1], key))
        excess = len(self._failures) - target
        if excess <= 0:
            return
        unlocked.sort()
        for _, key in unlocked[:excess]:
            del self._failures[key]
        excess -= min(excess, len(unlocked))
        if excess <= 0:
            return
        locked.sort()
        for _, key in locked[:excess]:
            del self._failures[key]
        logger.warning(
            "failed-AUTH table of %s full of lockouts: the %d ending soonest were forgotten",
            self._name,
            excess,
            extra={"max_keys": self._max_keys},
        )


class Admission:
    """Checks start only when every key's limiter admits them (`FailureLimiter.admits`); others wait their turn."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    async def enter(self, keys: Sequence[tuple[FailureLimiter, str]]) -> bool:
        """Wait until every key admits a check, then start it; False (nothing started) when a key is locked.

        The wait is bounded: it lasts only while checks of the same key are in flight, and each
        of those is one bounded password verification.
        """
        while not all(limiter.admits(key) for limiter, key in keys):
            changed = self._changed
            await changed.wait()
        if any(limiter.locked(key) for limiter, key in keys):
            return False
        for limiter, key in keys:
            limiter.begin(key)
        return True

    def leave(self, keys: Sequence[tuple[FailureLimiter, str]]) -> None:
        """The check started by `enter` ended: wake whoever waits for one of these keys."""
        for limiter, key in keys:
            limiter.end(key)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
