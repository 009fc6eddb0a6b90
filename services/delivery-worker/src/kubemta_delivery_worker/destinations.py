"""Per-destination concurrency and back-off, within one worker.

A destination is the job's domain for MX routes, or the route's first host for
relayhost and transport routes (every job through one relay or mailbox server shares
its limit, whatever the recipients' domains). At most `concurrency` deliveries to one
destination run at a time (Postfix `default_destination_concurrency_limit`, 20); a job
waits for a slot for at most `wait_seconds`, then is deferred with 4.4.5 and goes
through the normal retry schedule, so it never holds a consumer slot for long.

A reply asking us to slow down (421 anywhere, or a 4.7.x reply speaking of rates or
limits) pauses the destination for `backoff_seconds`: jobs arriving meanwhile are
deferred at once without connecting, and afterwards the destination starts again at
one delivery at a time, growing by one with each delivery that is not throttled
(Postfix's concurrency feedback: `default_destination_concurrency_negative_feedback`,
`..._positive_feedback`; its "delivery temporarily suspended" wording is reused).

The map of destinations is bounded (least recently used idle entries are forgotten).
"""

import asyncio
import itertools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.metrics import DESTINATION_BACKOFFS, DESTINATION_DEFERRALS

logger = logging.getLogger(__name__)

# RFC 5321 §4.2.3: 421 service not available, closing transmission channel.
SERVICE_NOT_AVAILABLE = 421
# RFC 3463 §3.5: 4.4.5 mail system congestion (our own limit for the destination is full).
STATUS_CONGESTION = "4.4.5"
# RFC 3463 §3.8 security/policy 4.7.x replies that are about sending too fast.
_RATE_WORDS = re.compile(r"rate|limit|too many|slow down|throttl|busy|volume", re.IGNORECASE)
_POLICY_STATUS = re.compile(r"^4\.7\.\d+$")
# Destinations remembered at once; idle ones beyond this are forgotten, least recently used first.
MAX_DESTINATIONS = 10_000
# Sources of routes that go to one fixed next hop rather than the domain's MX hosts.
NEXTHOP_SOURCES = frozenset({"relayhost", "transport"})


def destination_of(job: message_pb2.DeliveryJob) -> str:
    """The destination a job counts against: its domain, or its relayhost/transport next hop."""
    if job.route.source in NEXTHOP_SOURCES and job.route.hosts:
        host = job.route.hosts[0]
        where = host.unix_socket or f"{host.hostname or host.address}:{host.port}"
        return f"{job.route.source}:{where.lower()}"
    return job.domain.lower()


@dataclass(frozen=True, slots=True)
class Throttle:
    """A reply that asked us to slow down."""

    status: str
    diagnostic: str


def throttle_of(code: int, status: str, diagnostic: str) -> Throttle | None:
    """A Throttle when a reply is 421, or a 4xx with a 4.7.x status speaking of rates or limits."""
    if code == SERVICE_NOT_AVAILABLE or (
        400 <= code < 500 and _POLICY_STATUS.match(status) and _RATE_WORDS.search(diagnostic)
    ):
        return Throttle(status or "4.0.0", diagnostic)
    return None


def first_throttle(replies: Iterable[tuple[int, str, str]]) -> Throttle | None:
    """The first of (code, status, diagnostic) replies that asked us to slow down."""
    for code, status, diagnostic in replies:
        found = throttle_of(code, status, diagnostic)
        if found is not None:
            return found
    return None


class DestinationDeferred(Exception):
    """The destination is paused or full: defer the job without connecting."""

    def __init__(self, status: str, diagnostic: str, reason: str) -> None:
        super().__init__(diagnostic)
        self.status = status
        self.diagnostic = diagnostic
        self.reason = reason


@dataclass(slots=True)
class _Destination:
    limit: int
    active: int = 0
    paused_until: float = 0.0
    throttle: Throttle | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


class Slot:
    """A running delivery to a destination; `throttled()` reports a slow-down reply."""

    def __init__(self) -> None:
        self.throttle: Throttle | None = None

    def throttled(self, throttle: Throttle) -> None:
        self.throttle = throttle


class Destinations:
    """Concurrency slots and pauses per destination."""

    def __init__(
        self,
        *,
        concurrency: int,
        backoff_seconds: float,
        wait_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_destinations: int = MAX_DESTINATIONS,
    ) -> None:
        self._concurrency = concurrency
        self._backoff = backoff_seconds
        self._wait = wait_seconds
        self._clock = clock
        self._max = max_destinations
        self._destinations: OrderedDict[str, _Destination] = OrderedDict()

    def active(self, destination: str) -> int:
        """Deliveries running to `destination` now."""
        entry = self._destinations.get(destination)
        return entry.active if entry else 0

    def limit(self, destination: str) -> int:
        """The current concurrency limit of `destination`."""
        entry = self._destinations.get(destination)
        return entry.limit if entry else self._concurrency

    def _entry(self, destination: str) -> _Destination:
        entry = self._destinations.get(destination)
        if entry is None:
            entry = self._destinations[destination] = _Destination(self._concurrency)
            self._forget_idle(keep=destination)
        self._destinations.move_to_end(destination)
        return entry

    def _forget_idle(self, *, keep: str) -> None:
        """Forget idle destinations beyond the bound, least recently used first, but never `keep` (the one
        just added): the map may stay over the bound while the others are running or paused."""
        now = self._clock()
        idle = (
            name
            for name, entry in self._destinations.items()
            if name != keep and entry.active == 0 and entry.paused_until <= now
        )
        for name in list(itertools.islice(idle, max(len(self._destinations) - self._max, 0))):
            del self._destinations[name]

    def _check_paused(self, destination: str, entry: _Destination) -> None:
        remaining = entry.paused_until - self._clock()
        if entry.throttle is None or remaining <= 0:  # never throttled, or the pause is over
            return
        DESTINATION_DEFERRALS.labels(reason="backoff").inc()
        raise DestinationDeferred(
            entry.throttle.status,
            f"delivery temporarily suspended for {remaining:.0f}s: {entry.throttle.diagnostic}",
            "backoff",
        )

    def slot(self, destination: str) -> "_Lease":
        """`async with destinations.slot(d) as slot:` waits (bounded) for a slot; raises DestinationDeferred when
        paused or still full after the wait. (A class, not an async generator: one fewer generator per job.)"""
        return _Lease(self, destination)

    async def _acquire(self, destination: str, entry: _Destination) -> None:
        self._check_paused(destination, entry)
        async with entry.changed:
            try:
                if entry.active >= entry.limit:  # a free slot (the usual case) needs no timer
                    async with asyncio.timeout(self._wait):
                        await entry.changed.wait_for(lambda: entry.active < entry.limit or self._paused(entry))
            except TimeoutError:
                DESTINATION_DEFERRALS.labels(reason="busy").inc()
                raise DestinationDeferred(
                    STATUS_CONGESTION,
                    f"delivery temporarily suspended: {entry.active} deliveries to {destination} "
                    f"already running, none finished within {self._wait:.0f}s",
                    "busy",
                ) from None
            self._check_paused(destination, entry)
            entry.active += 1

    async def _release(self, destination: str, entry: _Destination, slot: Slot) -> None:
        entry.active -= 1
        self._feedback(destination, entry, slot)
        async with entry.changed:
            entry.changed.notify_all()

    def _paused(self, entry: _Destination) -> bool:
        return entry.paused_until > self._clock()

    def _feedback(self, destination: str, entry: _Destination, slot: Slot) -> None:
        throttle = slot.throttle
        if throttle is None:
            entry.limit = min(self._concurrency, entry.limit + 1)
            return
        entry.limit = 1
        entry.throttle = throttle
        entry.paused_until = self._clock() + self._backoff
        DESTINATION_BACKOFFS.inc()
        logger.warning(
            "backing off %s for %.0fs (concurrency 1 afterwards): %s",
            destination,
            self._backoff,
            throttle.diagnostic,
            extra={"destination": destination, "backoff_seconds": self._backoff},
        )


class _Lease:
    """One delivery's slot at a destination, held for the `async with` body (Destinations.slot)."""

    __slots__ = ("_destinations", "_destination", "_entry", "_slot")

    def __init__(self, destinations: Destinations, destination: str) -> None:
        self._destinations = destinations
        self._destination = destination
        self._entry: _Destination | None = None
        self._slot = Slot()

    async def __aenter__(self) -> Slot:
        entry = self._destinations._entry(self._destination)
        await self._destinations._acquire(self._destination, entry)
        self._entry = entry
        return self._slot

    async def __aexit__(self, *exc_info: object) -> None:
        if self._entry is not None:
            await self._destinations._release(self._destination, self._entry, self._slot)
