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
The cache outlives the jobs that fill it: its idle timers and QUITs run outside any
message's log context (kubemta_common.logs.outside_message), so they log no queue id.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    timer: asyncio.TimerHandle | None = field(default=None)


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
        self._idle: dict[ConnectionKey, list[_Idle[C]]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        """False when the settings turn reuse off (no idle time, or no room)."""
        return self._idle_seconds > 0 and self._per_host > 0 and self._total > 0

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._idle.values())

    def idle_count(self, key: ConnectionKey) -> int:
        """Idle connections held for `key`."""
        return len(self._idle.get(key, ()))

    def take(self, key: ConnectionKey) -> C | None:
        """The most recently used idle connection for `key` (removed from the cache), or None."""
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            if entry.timer is not None:
                entry.timer.cancel()
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
        entry = _Idle(connection, self._clock())
        entry.timer = asyncio.get_running_loop().call_later(
            self._idle_seconds, self._expire, key, entry, context=outside_message()
        )
        self._idle.setdefault(key, []).append(entry)

    def _expire(self, key: ConnectionKey, entry: _Idle[C]) -> None:
        entries = self._idle.get(key)
        if entries is not None and entry in entries:
            logger.debug("idle connection to %s:%d expired", key.address, key.port)
            self._evict(key, entry)

    def _evict(self, key: ConnectionKey, entry: _Idle[C]) -> None:
        entries = self._idle[key]
        entries.remove(entry)
        if not entries:
            del self._idle[key]
        if entry.timer is not None:
            entry.timer.cancel()
        self._quit(entry.connection)

    def _quit(self, connection: C) -> None:
        task = asyncio.get_running_loop().create_task(connection.quit(), context=outside_message())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle connection and wait for them (at shutdown)."""
        for key, entries in list(self._idle.items()):
            for entry in list(entries):
                self._evict(key, entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
