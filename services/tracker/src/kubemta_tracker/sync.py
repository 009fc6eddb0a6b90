"""Barrier sync: wait until the index holds everything the stream confirmed before a request came in.

A duplicate check asks "was X recorded?" right after the caller's own events were confirmed on
the `events` stream; this replica's index may still be a few batches behind. `BarrierSync.sync()`
appends a `barrier{nonce}` event (through the tracker's EventLog) and waits until the ingest
(ingest.py) indexed it: the stream is one ordered log, so everything confirmed before the
barrier was appended is in the index by then. The barrier is emitted after the request
arrived, so it lands after anything the caller saw confirmed; its own confirm is not needed.

Concurrent requests share one barrier: a round collects the requests that arrive before it is
emitted (at the next turn of the event loop), and they all wait for the same nonce. Each wait
is bounded by `timeout` (KUBEMTA_SYNC_TIMEOUT): False then, and the API answers 503 (the
caller goes on as before: at least once).

`append(event)` is the same wait for an event a request appends itself (an Idempotency-Key claim or
release, idempotency_api.py): that event is the barrier, recognised by its event id.
"""

import asyncio
import secrets
from dataclasses import dataclass, field

from kubemta.v1 import events_pb2
from kubemta_common.events.emitter import EventSink

FORGET_AFTER = 60.0
"""A round nobody saw indexed (its batch lost, another replica's reader) is forgotten after this long."""


@dataclass
class _Round:
    nonce: str
    indexed: asyncio.Future[None]
    started: float = field(default=0.0)


class BarrierSync:
    """Barriers of this replica: `sync()` for requests, `seen(nonces)` for the ingest."""

    def __init__(self, events: EventSink, timeout: float) -> None:
        self._events = events
        self._timeout = timeout
        self._collecting: _Round | None = None
        self._waiting: dict[str, _Round] = {}

    @property
    def waiting(self) -> int:
        """Rounds emitted and not yet seen indexed."""
        return len(self._waiting)

    async def sync(self) -> bool:
        """Wait (at most `timeout`) until the index caught up with the stream as it was when this was called."""
        round_ = self._collecting
        if round_ is None:
            loop = asyncio.get_running_loop()
            round_ = _Round(secrets.token_hex(12), loop.create_future())
            self._collecting = round_
            loop.call_soon(self._emit, round_)
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(round_.indexed)
        except TimeoutError:
            return False
        return True

    async def append(self, event: events_pb2.LifecycleEvent) -> bool:
        """Emit `event` (it gets a fresh event id) and wait (at most `timeout`) until the ingest indexed it: the
        event is its own barrier (the ingest reports its event id among the nonces), so the index then holds
        everything the stream confirmed before it, and the event itself."""
        loop = asyncio.get_running_loop()
        event.event_id = secrets.token_hex(16)
        round_ = _Round(event.event_id, loop.create_future())
        self._start(round_)
        self._events.emit(event)
        try:
            async with asyncio.timeout(self._timeout):
                await round_.indexed
        except TimeoutError:
            self._waiting.pop(round_.nonce, None)
            return False
        return True

    def _emit(self, round_: _Round) -> None:
        if self._collecting is round_:
            self._collecting = None
        self._start(round_)
        self._events.emit(events_pb2.LifecycleEvent(barrier=events_pb2.Barrier(nonce=round_.nonce)))

    def _start(self, round_: _Round) -> None:
        """Wait for `round_` from now on (and forget the rounds nobody saw indexed for FORGET_AFTER)."""
        now = asyncio.get_running_loop().time()
        round_.started = now
        for nonce, old in list(self._waiting.items()):
            if now - old.started > FORGET_AFTER:
                del self._waiting[nonce]
                old.indexed.cancel()
        self._waiting[round_.nonce] = round_

    def seen(self, nonces: list[str]) -> None:
        """The ingest indexed a batch holding these barrier nonces (committed): wake their rounds."""
        for nonce in nonces:
            round_ = self._waiting.pop(nonce, None)
            if round_ is not None and not round_.indexed.done():
                round_.indexed.set_result(None)
