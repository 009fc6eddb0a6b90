"""The idle connection cache: a finished SMTP session is kept for a short time and reused
by the next job to the same host, instead of a new TCP connection, greeting, EHLO and
TLS handshake (Postfix `smtp_connection_cache_on_demand`, `smtp_connection_cache_time_limit`).

Connections are keyed by everything that makes a session fit a job: the host's address
and port, the route's TLS policy (and, when it verifies certificates, the server name),
and the identity it authenticated as (never a secret).
The cache is bounded per key and in total; the oldest idle connection makes room. A
connection leaves the cache when taken (only one job uses it at a time) and, when its
idle time is up, says QUIT and closes. Checking that a taken connection still works
(RSET, RFC 5321 §4.1.1.5) is the caller's part.
The cache outlives the jobs that fill it: its idle timer and QUITs run outside any
message's log context (kubemta_common.logs.outside_message), so they log no queue id.
One timer serves the whole cache, set for the oldest idle connection's expiry (not one
per connection put back: that was a timer armed and cancelled for every message).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubemta_common.logs import outside_message

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionKey:
    """What a cached session must match to carry a job: address, port, TLS policy, AUTH identity."""

    address: str
    port: int
    tls_policy: int = 0
    server_name: str = ""  # the name a verified certificate was checked against (TLS policy VERIFY)
    identity: str = ""  # the user name a session authenticated as ("" for none); never a password


class Reusable(Protocol):
    """What the cache needs from a connection."""

    @property
    def is_connected(self) -> bool: ...

    async def quit(self) -> None:
        """Say QUIT and close; never raises."""
        ...


@dataclass(slots=True)
class _Idle[C: Reusable]:
    connection: C
    since: float


class ConnectionPool[C: Reusable]:
    """Idle connections by key, at most `per_host` per key and `total` overall, each for `idle_seconds`."""

    def __init__(
        self,
        *,
        idle_seconds: float,
        per_host: int,
        total: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle_seconds = idle_seconds
        self._per_host = per_host
        self._total = total
        self._clock = clock
        self._idle: dict[ConnectionKey, list[_Idle[C]]] = {}  # per key, oldest first
        self._count = 0
        self._sweep: asyncio.TimerHandle | None = None  # due when the oldest idle connection expires
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """False when the settings turn reuse off (no idle time, or no room)."""
        return self._idle_seconds > 0 and self._per_host > 0 and self._total > 0

    def __len__(self) -> int:
        return self._count

    def idle_count(self, key: ConnectionKey) -> int:
        """Idle connections held for `key`."""
        return len(self._idle.get(key, ()))

    def take(self, key: ConnectionKey) -> C | None:
        """The most recently used idle connection for `key` (removed from the cache), or None."""
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            self._count -= 1
            if self._clock() - entry.since < self._idle_seconds and entry.connection.is_connected:
                if not entries:
                    del self._idle[key]
                return entry.connection
            self._quit(entry.connection)
        self._idle.pop(key, None)
        return None

    def put(self, key: ConnectionKey, connection: C) -> None:
        """Keep `connection` idle for reuse, making room by closing the oldest; closes it if reuse is off."""
        if not self.enabled or not connection.is_connected:
            self._quit(connection)
            return
        entries = self._idle.setdefault(key, [])
        if len(entries) >= self._per_host:
            self._evict(key, entries[0])
        while len(self) >= self._total:
            oldest_key, oldest = min(
                ((k, e) for k, es in self._idle.items() for e in es), key=lambda item: item[1].since
            )
            self._evict(oldest_key, oldest)
        self._idle.setdefault(key, []).append(_Idle(connection, self._clock()))
        self._count += 1
        if self._sweep is None:
            self._arm(self._idle_seconds)

    def _arm(self, delay: float) -> None:
        self._sweep = asyncio.get_running_loop().call_later(delay, self._expire, context=outside_message())

    def _expire(self) -> None:
        """QUIT the connections whose idle time is up; set the timer for the next one to expire."""
        self._sweep = None
        now = self._clock()
        for key, entries in list(self._idle.items()):
            while entries and now - entries[0].since >= self._idle_seconds:
                logger.debug("idle connection to %s:%d expired", key.address, key.port)
                self._evict(key, entries[0])
        if self._idle:
            oldest = min(entries[0].since for entries in self._idle.values())
            self._arm(max(0.0, oldest + self._idle_seconds - now))

    def _evict(self, key: ConnectionKey, entry: _Idle[C]) -> None:
        entries = self._idle[key]
        entries.remove(entry)
        self._count -= 1
        if not entries:
            del self._idle[key]
        self._quit(entry.connection)

    def _quit(self, connection: C) -> None:
        task = asyncio.get_running_loop().create_task(connection.quit(), context=outside_message())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle connection and wait for them (at shutdown)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for key, entries in list(self._idle.items()):
            for entry in list(entries):
                self._evict(key, entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
