"""Publishing lifecycle events to the `events` stream without ever holding up mail for long.

`EventLog.emit(event)` stamps an event (id, time, service, process; queue id and job id from
the log context when the caller left them empty), writes it as one structured log line (unless
KUBEMTA_LOG_EVENTS leaves its kind out: log_kinds.py; the lines of 20 ms are written together,
event_lines.py), and puts it in a bounded in-memory buffer; it never blocks. The caller does not change an
event after emitting it. A background task publishes what is
buffered as one `EventBatch` per stream message with publisher confirms (group commit: the
events emitted while the batches in flight wait for their confirms go out together in the next,
so an idle service adds no delay and a busy one appends a few hundred events per stream message).
One batch waits for its confirm at a time (`MAX_IN_FLIGHT`): the events emitted meanwhile go out
together in the next. Measured on the whole pipeline (`make bench`'s 1 KiB workload, 20 sessions), allowing 4
batches in flight made most stream messages carry one or two events, and cost 0.3–0.5 CPU ms per mail message more
(broker and services) than one at a time, with a lower throughput and a higher accept latency. An event that must be
on the stream before its input is acknowledged (below) then waits at most two confirms (the batch in flight, then its
own); every such wait is a window in which a crash repeats work.

`await EventLog.record(event)` emits and waits for that event's confirm, at most
`confirm_timeout` seconds: the events that guard against duplicates after a crash (the ingress'
received, the worker's attempt, the queue-manager's queued, the resolver's routed) must be on
the stream before the input is acknowledged. It returns False instead of raising when the
stream did not confirm in time, and right away while the stream is known to be failing, so an
outage of the stream costs the mail flow one timeout, not one per message.

When the stream does not take a batch (not connected, the stream missing or unavailable, a
nack), the batch goes back to the head of the buffer and is retried with a growing pause (at most
`MAX_RETRY_PAUSE`); when the buffer holds `buffer` events the oldest are dropped and counted
(`kubemta_events_dropped_total`). Mail flow never fails because of events: the stream is a
record of what happened, not a step of the pipeline.
"""

import asyncio
import logging
import os
import socket
import time
from collections import deque
from datetime import UTC, datetime
from typing import Protocol

from kubemta.v1 import events_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import message_properties, publish_shared
from kubemta_common.amqp.streams import EVENTS
from kubemta_common.bus_messages import length_delimited
from kubemta_common.events.event_ids import new_event_id
from kubemta_common.events.event_lines import EventLines
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.logs import current_log_context
from kubemta_common.metrics import EVENTS_BUFFERED, EVENTS_DROPPED, EVENTS_PUBLISHED

logger = logging.getLogger("kubemta.events")

BATCH_EVENTS = 500
"""Most events in one stream message."""
BATCH_BYTES = 1024 * 1024
"""Most bytes of events in one stream message (far below RabbitMQ 4's 16 MiB message size limit, whose
breach would close the publish channel the mail shares)."""
MAX_RETRY_PAUSE = 5.0
"""Longest pause between attempts to publish a batch the stream did not take."""
MAX_IN_FLIGHT = 1
"""Batches waiting for their confirm at once (larger batches, fewer stream messages: see the module docstring)."""
EVENT_TYPE = events_pb2.EventBatch.DESCRIPTOR.full_name


class EventSink(Protocol):
    """What a handler emits lifecycle events to (the real `EventLog`, or a test's recorder)."""

    def emit(self, event: events_pb2.LifecycleEvent) -> None:
        """Stamp, log and publish `event` in the background; never blocks. The caller leaves `event` as it is."""

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        """Emit `event` and wait (bounded) for the stream's confirm; True when it was confirmed."""
        ...


class NoEvents:
    """An `EventSink` that drops every event (a handler built without an event log)."""

    def emit(self, event: events_pb2.LifecycleEvent) -> None:
        """Drop `event`."""

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        """Drop `event`; never confirmed."""
        return False


class _Pending:
    """One buffered event and, when someone waits for its confirm, the future that tells them."""

    __slots__ = ("body", "confirmed")

    def __init__(self, body: bytes, confirmed: asyncio.Future[bool] | None) -> None:
        self.body = body
        self.confirmed = confirmed


class EventLog:
    """Publishes a service's lifecycle events to the `events` stream (an `EventSink`)."""

    def __init__(
        self,
        broker: Broker,
        *,
        service: str,
        buffer: int,
        confirm_timeout: float,
        publish_timeout: float,
        logged_kinds: frozenset[str] | None = None,
    ) -> None:
        self._broker = broker
        self._logged_kinds = logged_kinds
        """The kinds written as log lines too (KUBEMTA_LOG_EVENTS, log_kinds.py); None: every kind."""
        self._service = service
        self._source = f"{socket.gethostname()}/{os.getpid()}"
        self._limit = buffer
        self._confirm_timeout = confirm_timeout
        self._publish_timeout = publish_timeout
        self._buffer: deque[_Pending] = deque()
        """Events not yet sent; a batch in flight is out of it and comes back to its head if it fails."""
        self._in_flight: set[asyncio.Task[None]] = set()
        self._sending = 0
        """Events in the batches waiting for their confirm."""
        self._pause = 0.1
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._lines = EventLines()

    @property
    def buffered(self) -> int:
        """Events not yet published: waiting, or in a batch waiting for its confirm."""
        return len(self._buffer) + self._sending

    @property
    def failing(self) -> bool:
        """True from a failed publish until the next one succeeds."""
        return self._failing

    def start(self) -> None:
        """Start the background publisher (in the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kubemta-events")

    def emit(self, event: events_pb2.LifecycleEvent) -> None:
        """Stamp, log and buffer `event` for publishing; never blocks."""
        self._put(event, None)

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        """Emit `event` and wait up to `confirm_timeout` for its confirm (not at all while the stream is failing)."""
        if self._failing or self._task is None:
            self._put(event, None)
            return False
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[bool] = loop.create_future()  # this event's alone: no shield needed
        self._put(event, confirmed)
        expiry = loop.call_later(self._confirm_timeout, _expire, confirmed)  # cheaper than asyncio.timeout + shield
        try:
            return await confirmed
        finally:
            expiry.cancel()

    def _put(self, event: events_pb2.LifecycleEvent, confirmed: asyncio.Future[bool] | None) -> None:
        self._stamp(event)
        if self._logged_kinds is None or event_kind(event) in self._logged_kinds:
            self._lines.add(event)
        while len(self._buffer) >= self._limit:
            dropped = self._buffer.popleft()
            EVENTS_DROPPED.inc()
            if dropped.confirmed is not None and not dropped.confirmed.done():
                dropped.confirmed.set_result(False)
        self._buffer.append(_Pending(event.SerializeToString(), confirmed))
        self._drained.clear()
        self._wake.set()  # the publisher sets EVENTS_BUFFERED when it wakes: once per batch, not per event

    def _stamp(self, event: events_pb2.LifecycleEvent) -> None:
        if not event.event_id:
            event.event_id = new_event_id()
        if not event.HasField("time"):
            now = time.time_ns()  # microseconds, as Timestamp.FromDatetime(datetime.now(UTC)) stamped them
            event.time.seconds, nanos = divmod(now, 1_000_000_000)
            event.time.nanos = nanos // 1000 * 1000
        event.service = event.service or self._service
        event.source = event.source or self._source
        context = current_log_context()
        if not event.queue_id and context.queue_id:
            event.queue_id = context.queue_id
        if not event.job_id and context.job_id:
            event.job_id = context.job_id

    async def _run(self) -> None:
        while True:
            EVENTS_BUFFERED.set(self.buffered)
            if not self._buffer or len(self._in_flight) >= MAX_IN_FLIGHT:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._next_batch()
            for _ in batch:
                self._buffer.popleft()
            self._sending += len(batch)
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)
            if self._failing:  # one batch at a time while the stream fails, each after the pause
                await task

    def _sent(self, task: "asyncio.Task[None]") -> None:
        self._in_flight.discard(task)
        EVENTS_BUFFERED.set(self.buffered)
        if not self._buffer and not self._in_flight:
            self._drained.set()
        self._wake.set()

    async def _send(self, batch: list[_Pending]) -> None:
        """Publish one batch; on failure put it back at the head of the buffer and wait the pause before returning."""
        published = await self._publish(batch)
        self._sending -= len(batch)
        if published:
            for pending in batch:
                if pending.confirmed is not None and not pending.confirmed.done():
                    pending.confirmed.set_result(True)
            EVENTS_PUBLISHED.inc(len(batch))
            self._failing = False
            self._pause = 0.1
            return
        self._failing = True
        for pending in batch:  # nobody waits through an outage: record() returns False
            if pending.confirmed is not None and not pending.confirmed.done():
                pending.confirmed.set_result(False)
        self._buffer.extendleft(reversed(batch))
        while len(self._buffer) > self._limit:  # the oldest go when the buffer is over its bound
            self._buffer.popleft()
            EVENTS_DROPPED.inc()
        pause, self._pause = self._pause, min(self._pause * 2, MAX_RETRY_PAUSE)
        await asyncio.sleep(pause)

    def _next_batch(self) -> list[_Pending]:
        """The oldest buffered events, at most BATCH_EVENTS of them and BATCH_BYTES together (at least one)."""
        batch: list[_Pending] = []
        size = 0
        for pending in self._buffer:
            if batch and (len(batch) >= BATCH_EVENTS or size + len(pending.body) > BATCH_BYTES):
                break
            batch.append(pending)
            size += len(pending.body) + 8
        return batch

    async def _publish(self, batch: list["_Pending"]) -> bool:
        if not self._broker.connected:
            return False
        body = b"".join(length_delimited(1, pending.body) for pending in batch)  # an EventBatch: repeated field 1
        properties = message_properties(message_id=None, message_type=EVENT_TYPE, timestamp=datetime.now(UTC))
        try:
            async with asyncio.timeout(self._publish_timeout):
                await publish_shared(self._broker, EVENTS, body, properties)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: keep the batch, mail flow goes on
            if not self._failing:
                logger.warning("the %s stream did not take %d events (kept, retrying): %r", EVENTS, len(batch), exc)
            return False
        return True

    async def close(self, drain_seconds: float) -> None:
        """Write the kept log lines; publish what is buffered (for at most `drain_seconds`, not at all while the stream
        fails), then stop."""
        self._lines.write()
        if self._task is None:
            return
        if not self._failing:
            try:
                async with asyncio.timeout(drain_seconds):
                    await self._drained.wait()
            except TimeoutError:
                pass
        left = self.buffered
        for task in (self._task, *self._in_flight):
            task.cancel()
        for task in (self._task, *self._in_flight):
            try:
                await task
            except asyncio.CancelledError:
                pass
        if left:
            logger.warning("stopping with %d lifecycle events not published", left)
            EVENTS_DROPPED.inc(left)
        self._task = None
        self._lines.write()  # what was emitted while it drained


def _expire(confirmed: "asyncio.Future[bool]") -> None:
    """`record`'s wait is over: not confirmed in time."""
    if not confirmed.done():
        confirmed.set_result(False)
