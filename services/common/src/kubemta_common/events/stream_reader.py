"""Reading a RabbitMQ stream from an offset, in batches, resuming where it left off.

A `StreamReader` consumes one stream (`events`, `decisions`: streams.py) on a channel of its own
with a prefetch limit (streams require one) and manual acknowledgements. Each delivery carries
its position in the header `x-stream-offset`. What arrived since the last handler call (at most
half the prefetch, so the broker keeps sending the other half meanwhile) goes to the handler as
one list of `StreamRecord`, at the latest `FLUSH_SECONDS` after the first of them arrived; when
the handler returned, the batch is acknowledged with one `basic.ack(multiple=True)` (on a stream
an ack only gives the broker credit to send more: nothing is removed).

Reconnects: the consumer is not restored by aio-pika's robust channel (it would start again at
the original offset); when the channel closes or the broker cancels the consumer (the stream
was deleted), the reader opens a new channel and consumes from the last handled offset + 1, so
a handler sees each record at least once and, within one process, in order and once. A
handler that raises gets the same batch again after a growing pause: it must skip records it
cannot parse instead of raising for them.

`caught_up`: set once the reader handled what the stream held when it started. RabbitMQ 3.10
reports no message count for a stream (queue.declare-ok says 0) and 4.x an approximate one, so
the reader learns the tail's offset itself, before it starts reading: a probe consumer at
`x-stream-offset: "last"` receives the stream's last chunk (`PROBE_FIRST_WAIT` for its first
record, then until `PROBE_IDLE` passes without one, at most `PROBE_MAX`), and the highest
offset it saw is the target. caught_up is set when
- the reader handled the target offset (or started after it), or
- the stream looked empty to the probe (or the start was "next") and no delivery came for
  `IDLE_EMPTY`, or, whatever the probe said, none came for `IDLE_ANY` while the reader had
  nothing pending (a start beyond the tail, e.g. a time in the future), or
- `caught_up_within` seconds passed since `run()` began (logged: a stream being read
  slowly, or a broker not answering, must not keep a service from starting for ever).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp import commands as spec

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.unrestored_consume import consume_unrestored

logger = logging.getLogger(__name__)

OFFSET_HEADER = "x-stream-offset"
"""The header RabbitMQ sets on each stream delivery (and the consume argument naming where to start)."""
FLUSH_SECONDS = 0.05
"""Longest a record waits for more to arrive before the handler gets its batch."""
PROBE_FIRST_WAIT = 0.5
"""How long the tail probe waits for the first record of the last chunk (none: the stream looks empty)."""
PROBE_IDLE = 0.1
"""The tail probe stops when no record came for this long."""
PROBE_MAX = 2.0
"""Longest the tail probe reads (a busy stream keeps appending)."""
PROBE_PREFETCH = 5000
"""The probe's prefetch: enough for a whole chunk of small records."""
IDLE_EMPTY = 0.2
"""Caught up after this long without a delivery when the stream looked empty at the start."""
IDLE_ANY = 1.0
"""Caught up after this long without a delivery and with nothing pending, whatever the probe saw."""
CAUGHT_UP_WITHIN = 30.0
"""Default longest wait before `caught_up` is set anyway."""
MAX_RETRY_PAUSE = 5.0
"""Longest pause before consuming again after a failure (stream missing, handler error)."""

type Offset = int | str | datetime
"""Where to start: an offset, "first", "last", "next", or a time (the first chunk written at or after it)."""


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One stream message: its offset, body, and the AMQP timestamp its publisher set (None if none)."""

    offset: int
    body: bytes
    timestamp: datetime | None


Handler = Callable[[list[StreamRecord]], Awaitable[None]]

_CLOSED = None
"""Put on the delivery queue when the channel closed or the consumer was cancelled."""


def record_of(message: AbstractIncomingMessage) -> StreamRecord | None:
    """The record of a delivery, or None when it has no usable `x-stream-offset` header."""
    offset = (message.headers or {}).get(OFFSET_HEADER)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return None
    return StreamRecord(offset, message.body, message.timestamp)


class StreamReader:
    """Reads one stream from an offset spec with a consumer of its own (x-stream-offset, qos prefetch, manual
    acks with multiple=True after the handler returned), resuming after the last handled offset on reconnect."""

    def __init__(
        self,
        broker: Broker,
        stream: str,
        handler: Handler,
        *,
        start: Offset = "first",
        prefetch: int = 1000,
        caught_up_within: float = CAUGHT_UP_WITHIN,
    ) -> None:
        self._broker = broker
        self._stream = stream
        self._handler = handler
        self._start = start
        self._prefetch = max(2, prefetch)
        self._batch_limit = max(1, self._prefetch // 2)
        self._caught_up_within = caught_up_within
        self._caught_up = asyncio.Event()
        self._last: int | None = None
        self._target: int | None = None
        """The tail's offset the probe found; None: unknown or empty."""

    @property
    def caught_up(self) -> asyncio.Event:
        """Set once it read what the stream held when it started (or gave up waiting, bounded)."""
        return self._caught_up

    @property
    def last_offset(self) -> int | None:
        """The offset of the last record the handler returned for."""
        return self._last

    async def run(self) -> None:
        """Read until cancelled."""
        timer = asyncio.get_running_loop().call_later(self._caught_up_within, self._give_up_waiting)
        try:
            await self._find_target()
            pause = 0.1
            while not self._broker.closed:  # closed: the service is stopping, no consuming again
                try:
                    if await self._consume():
                        pause = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the stream missing, the broker gone, a handler error: try again
                    if self._broker.closed:
                        break
                    logger.warning("reading the %s stream failed, again in %.1fs: %r", self._stream, pause, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_RETRY_PAUSE)
        finally:
            timer.cancel()

    def _give_up_waiting(self) -> None:
        if not self._caught_up.is_set():
            logger.warning(
                "the %s stream reader did not catch up within %.0fs (at offset %s of %s); going on",
                self._stream,
                self._caught_up_within,
                self._last,
                self._target,
            )
            self._caught_up.set()

    def _next_start(self) -> Offset:
        return self._start if self._last is None else self._last + 1

    async def _find_target(self) -> None:
        """Learn the tail's offset (the last chunk's highest) with a short-lived probe consumer."""
        if self._start == "next":
            return
        try:
            channel = await self._broker.consumer_channel(PROBE_PREFETCH)
        except Exception as exc:
            logger.warning("could not probe the tail of the %s stream: %r", self._stream, exc)
            return
        try:
            queue = await channel.get_queue(self._stream, ensure=False)
            offsets: asyncio.Queue[int] = asyncio.Queue()

            async def on_message(message: AbstractIncomingMessage) -> None:
                record = record_of(message)
                if record is not None:
                    offsets.put_nowait(record.offset)

            await consume_unrestored(queue, on_message, {OFFSET_HEADER: "last"})
            highest: int | None = None
            wait = PROBE_FIRST_WAIT
            try:
                async with asyncio.timeout(PROBE_MAX):
                    while True:
                        async with asyncio.timeout(wait):
                            offset = await offsets.get()
                        highest = offset if highest is None else max(highest, offset)
                        wait = PROBE_IDLE
            except TimeoutError:
                pass
            self._target = highest
            logger.debug("the %s stream's tail is at offset %s", self._stream, highest)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the stream missing: the idle rule and the bound decide
            logger.warning("could not probe the tail of the %s stream: %r", self._stream, exc)
        finally:
            await _close(channel)

    def _check_caught_up(self) -> None:
        if self._caught_up.is_set() or self._target is None or self._last is None:
            return
        if self._last >= self._target:
            self._caught_up.set()

    async def _consume(self) -> bool:
        """Consume until the channel closes or the broker cancels the consumer; True if anything was handled."""
        deliveries: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        channel = await self._broker.consumer_channel(self._prefetch)
        handled = False
        try:
            underlay = await channel.get_underlay_channel()
            underlay.closing.add_done_callback(lambda _: deliveries.put_nowait(_CLOSED))
            queue = await channel.get_queue(self._stream, ensure=False)

            async def on_message(message: AbstractIncomingMessage) -> None:
                deliveries.put_nowait(message)

            start = self._next_start()
            tag = await consume_unrestored(queue, on_message, {OFFSET_HEADER: start})

            def on_cancel(frame: spec.Basic.Cancel) -> None:
                if frame.consumer_tag == tag:
                    deliveries.put_nowait(_CLOSED)

            underlay.on_consumer_cancel_callbacks.add(on_cancel)
            logger.info("reading the %s stream from %s (prefetch %d)", self._stream, start, self._prefetch)
            if isinstance(start, int) and self._target is not None and start > self._target:
                self._caught_up.set()
            while True:
                batch = await self._next_batch(deliveries)
                if batch is None:
                    logger.info("the %s stream consumer stopped; consuming again", self._stream)
                    return handled
                if batch:
                    await self._handle(batch)
                    handled = True
        finally:
            await _close(channel)

    async def _next_batch(
        self, deliveries: "asyncio.Queue[AbstractIncomingMessage | None]"
    ) -> list[AbstractIncomingMessage] | None:
        """What arrived (at most half the prefetch, waiting at most FLUSH_SECONDS after the first); None when
        the consumer stopped."""
        first = await self._first_delivery(deliveries)
        if first is None:
            return None
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_SECONDS
        while len(batch) < self._batch_limit:
            if deliveries.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        message = await deliveries.get()
                except TimeoutError:
                    break
            else:
                message = deliveries.get_nowait()
            if message is None:
                deliveries.put_nowait(_CLOSED)  # hand this batch over first, stop at the next call
                break
            batch.append(message)
        return batch

    async def _first_delivery(
        self, deliveries: "asyncio.Queue[AbstractIncomingMessage | None]"
    ) -> AbstractIncomingMessage | None:
        while not self._caught_up.is_set():
            idle = IDLE_EMPTY if self._target is None else IDLE_ANY
            try:
                async with asyncio.timeout(idle):
                    return await deliveries.get()
            except TimeoutError:
                logger.debug("no delivery from the %s stream for %.1fs: caught up", self._stream, idle)
                self._caught_up.set()
        return await deliveries.get()

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        records: list[StreamRecord] = []
        for message in batch:
            record = record_of(message)
            if record is None:
                logger.warning("a %s stream delivery without an %s header: skipped", self._stream, OFFSET_HEADER)
            elif self._last is None or record.offset > self._last:
                records.append(record)
        records.sort(key=lambda record: record.offset)
        if records:
            await self._handler(records)
            self._last = records[-1].offset
        last_delivery = max(batch, key=lambda message: message.delivery_tag or 0)
        await last_delivery.ack(multiple=True)
        self._check_caught_up()


async def _close(channel: AbstractChannel) -> None:
    """Close a channel, bounded; a channel that is gone already is fine."""
    try:
        async with asyncio.timeout(5):
            await channel.close()
    except (TimeoutError, aiormq.exceptions.AMQPError, RuntimeError, OSError) as exc:
        logger.debug("closing a stream channel: %r", exc)
