"""Acknowledged consuming of typed stages with a clean drain.

A `Subscription` (`subscribe`) pairs a stage (stages.py) with its handler: each delivery is
decoded as the stage's protobuf type and the handler gets the message (`subscribe_deliveries`:
the message and the delivery, for a handler that needs the delivery's own facts, such as
`x-delivery-count`). A body that does not decode raises PermanentError, as below.

The handler runs for each delivery; the delivery is acknowledged only when the
handler returned (its outputs were confirmed by then). A `PermanentError` (e.g. an
undecodable message) rejects it without requeueing, which dead-letters it to `held`.
Any other failure (a `TransientError` such as an unconfirmed publish, or an exception
nobody expected: a poison message) returns it to the queue after a pause that grows with
the number of times the queue already returned it (`x-delivery-count`).

Returns use `basic.reject(requeue=True)`, never `basic.nack`: every RabbitMQ version
counts a reject toward the quorum queue's `x-delivery-limit`, while since RabbitMQ 4.3 a
nack does not ("the consumer did not process the message" rather than "processing
failed"), so a message that fails every time would circle forever. After
`topology.DELIVERY_LIMIT` returns the queue dead-letters it to `held`. The pause keeps a
failing message from spinning (returned messages are served first) without keeping its
prefetch slot for long: a few poison messages slow a stage for seconds, not forever.

Acknowledgements are batched (acks.py): sent at the end of the event-loop turn the handler
returned in, as one `basic.ack(multiple=True)` for every finished delivery below the lowest
unfinished one on that channel; rejections go out at once, one by one. A delivery first waits
in the consumer's batch window (batch_window.py, `KUBEMTA_CONSUMER_BATCH_WINDOW`), so that the
deliveries arriving within a few milliseconds of each other are handled in the same turn: their
outputs, confirms and acknowledgement go in batches instead of one round each.

On shutdown the consumer stops taking deliveries, lets in-flight handlers finish within
the drain time, sends their acknowledgements, and leaves the rest unacknowledged so the broker re-delivers them (a
closed channel counts as a failed delivery too).

The consumer consumes again itself, with a new consumer tag, whenever its channel was reopened (a reconnect, or a
channel error such as RabbitMQ 3.x's and 4.0-4.2's consumer timeout, which closes the channel) and whenever the
broker cancelled it (`basic.cancel`: RabbitMQ 4.3's quorum queue consumer timeout, or a deleted queue). aio-pika's
robust channel is not asked to restore it (`robust=False`): after a cancel it consumes again with the same tag,
which RabbitMQ 4.3.0-4.3.6 still holds (it waits for a `basic.cancel-ok` it did not announce it would take) and
answers by closing the whole connection (530 NOT_ALLOWED), and aio-pika's reconnection then waited for itself
for ever, with every channel of the service closed (tests/e2e/test_consumer_timeout.py). The deliveries of a
cancelled consumer are back in the queue: their handlers are cancelled, as a closed channel's are, and nothing of
theirs is acknowledged.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
)
from google.protobuf.message import Message
from pamqp import commands as spec

from kubemta_common.amqp.acks import AckBatcher
from kubemta_common.amqp.batch_window import BatchWindow
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.memory import ByteGate
from kubemta_common.amqp.stages import Stage
from kubemta_common.amqp.topology import DELIVERY_LIMIT
from kubemta_common.amqp.unrestored_consume import consume_unrestored
from kubemta_common.config_types import format_duration
from kubemta_common.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
"""What a `Consumer` calls with each delivery (a subscription's decoding handler)."""
type MessageHandler[M: Message] = Callable[[M], Awaitable[None]]
type DeliveryHandler[M: Message] = Callable[[M, AbstractIncomingMessage], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stage, its handler, and what a `Consumer` of the stage calls: decode, then call the handler."""

    stage: Stage[Any]
    handler: Callable[..., Awaitable[None]]
    """The typed handler, as given to `subscribe` or `subscribe_deliveries`."""
    on_delivery: Handler


def subscribe[M: Message](stage: Stage[M], handler: MessageHandler[M]) -> Subscription:
    """Consume `stage`: `handler` gets each message decoded."""

    async def handle(delivery: AbstractIncomingMessage) -> None:
        await handler(stage.decode(delivery.body))

    return Subscription(stage, handler, handle)


def subscribe_deliveries[M: Message](stage: Stage[M], handler: DeliveryHandler[M]) -> Subscription:
    """Consume `stage`: `handler` gets each message decoded and the delivery it came in."""

    async def handle(delivery: AbstractIncomingMessage) -> None:
        await handler(stage.decode(delivery.body), delivery)

    return Subscription(stage, handler, handle)


DELIVERY_COUNT_HEADER = "x-delivery-count"
"""Set by quorum queues on a redelivered message: how many times it was returned before."""
MAX_TRANSIENT_PAUSE = 30.0
"""Longest pause before returning a message whose handler failed transiently (broker trouble)."""
MAX_CRASH_PAUSE = 5.0
"""Longest pause before returning a message whose handler crashed (a poison message goes to held soon)."""
ACK_FLUSH_TIMEOUT = 5.0
"""How long a stopping consumer waits for its last acknowledgements to be written."""
CANCEL_TIMEOUT = 5.0
"""How long a stopping consumer waits for the broker to confirm its basic.cancel. None is sent while the
connection is down: the broker already returned that consumer's deliveries to the queue when it dropped."""


def returned_count(message: AbstractIncomingMessage) -> int:
    """How many times the queue returned this message before this delivery (0 for the first one)."""
    value = (message.headers or {}).get(DELIVERY_COUNT_HEADER, 0)
    return value if isinstance(value, int) and value > 0 else 0


def is_redelivery(message: AbstractIncomingMessage) -> bool:
    """True when the broker delivered this message before (to a consumer that did not acknowledge it): the AMQP
    `redelivered` flag, or a quorum queue's `x-delivery-count` above 0."""
    return bool(message.redelivered) or returned_count(message) > 0


def may_be_repeated(message: AbstractIncomingMessage | None, flagged: bool) -> bool:
    """True when this input may have been handled before: a redelivery, or a job its publisher flagged as a possible
    second copy (DeliveryJob.maybe_duplicate: the publisher handled its own input twice)."""
    return flagged or (message is not None and is_redelivery(message))


UNANSWERED_RETURNS = 3
"""Returns a redelivered message may take because its duplicate check got no answer (the tracker restarting, or
reconnecting after a broker restart, as every service is then), before it is handled without one."""


def return_if_unanswered(message: AbstractIncomingMessage, check: str) -> None:
    """A redelivered message's duplicate check got no answer: raise TransientError, so the consumer returns it after
    its growing pause (2 s, 4 s, 8 s) and asks again, until it was returned more than UNANSWERED_RETURNS times
    (crashes included); then return, and the caller goes on without the answer (at least once: a possible
    duplicate, never a lost message). Right after a broker restart every consumer gets its unacknowledged messages
    back at once while the tracker is still reconnecting; going on at once sent those again."""
    returned = returned_count(message)
    if returned <= UNANSWERED_RETURNS:
        raise TransientError(
            f"the {check} duplicate check got no answer; asking again later (returned {returned} times before)"
        )


def return_pause(base: float, returned: int, cap: float) -> float:
    """`base` doubled for each earlier return, at most `cap` (and never negative)."""
    return max(0.0, min(base * 2.0 ** min(returned, 32), cap))


class Consumer:
    """Consumes one queue with one handler."""

    def __init__(
        self,
        broker: Broker,
        queue_name: str,
        handler: Handler,
        *,
        prefetch: int,
        retry_pause: float = 1.0,
        gate: ByteGate | None = None,
        batch_window: float = 0.0,
    ):
        self._broker = broker
        self._queue_name = queue_name
        self._handler = handler
        self._prefetch = prefetch
        self._retry_pause = retry_pause
        self._gate = gate
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._cancelled_tags: set[str] = set()
        """Tags the broker cancelled: their deliveries went back to the queue."""
        self._in_flight: dict[asyncio.Task[None], str | None] = {}
        """Each running delivery's task and the consumer tag it came for."""
        self._consuming_again: asyncio.Task[None] | None = None
        self._stopping = False
        self._acks = AckBatcher()
        self._window = BatchWindow(batch_window, capacity=prefetch)

    async def start(self) -> None:
        """Wait for the broker, then start consuming."""
        channel = await self._broker.consumer_channel(self._prefetch)
        self._channel = channel
        self._queue = await channel.get_queue(self._queue_name, ensure=True)
        if isinstance(channel, AbstractRobustChannel):
            channel.close_callbacks.add(self._on_channel_close)
            channel.reopen_callbacks.add(self._on_reopen)
        await self._consume()
        logger.info(
            "consuming %s (prefetch %d, batch window %s)",
            self._queue_name,
            self._prefetch,
            format_duration(self._window.seconds),
        )

    @property
    def _leaving(self) -> bool:
        """True once this consumer or the whole service is stopping: nothing is to consume again."""
        return self._stopping or self._broker.closed

    async def _consume(self) -> None:
        """Consume with a new tag, and hear of the broker cancelling it (on the channel now under the robust one)."""
        assert self._channel is not None and self._queue is not None
        underlay = await self._channel.get_underlay_channel()
        if self._on_cancel not in underlay.on_consumer_cancel_callbacks:
            underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        self._tag = await consume_unrestored(self._queue, self._on_message)

    def _on_channel_close(self, _channel: object, reason: BaseException | None = None) -> None:
        """The channel closed: say why (the broker's own words, e.g. a consumer timeout's PRECONDITION_FAILED)."""
        if self._leaving:
            return
        logger.warning(
            "the channel consuming %s closed (%r): its deliveries in flight go back to the queue",
            self._queue_name,
            reason,
        )

    def _on_reopen(self, _channel: object) -> None:
        """The robust channel was reopened (a reconnect, a channel error): the old tag is void, consume again."""
        self._consume_again(pause=0.0, why="its channel was reopened", ask_first=False)

    def _on_cancel(self, frame: spec.Basic.Cancel) -> None:
        """The broker cancelled a consumer on this consumer's channel: when it is this one's, its deliveries are back
        in the queue (their handlers are cancelled) and it consumes again after a pause."""
        tag = frame.consumer_tag
        if tag is None or tag != self._tag:
            return
        self._tag = None
        self._cancelled_tags.add(tag)
        returned = [task for task, task_tag in self._in_flight.items() if task_tag == tag]
        logger.warning(
            "the broker cancelled the consumer of %s (RabbitMQ 4.3 does when a delivery stays unacknowledged for its "
            "consumer_timeout, and on a deleted queue): deliveries it had in flight, back in the queue: %d; "
            "consuming again in %s",
            self._queue_name,
            len(returned),
            format_duration(self._retry_pause),
        )
        for task in returned:
            task.cancel()
        self._consume_again(pause=self._retry_pause, why="the broker cancelled it", ask_first=True)

    def _consume_again(self, *, pause: float, why: str, ask_first: bool) -> None:
        """Start consuming again (in a task of its own; one at a time) unless stopping; `ask_first`: only once the
        queue exists (after a cancel: it may have been deleted; a reopened channel has just declared it)."""
        if self._leaving:
            return
        running = self._consuming_again
        if running is not None and not running.done():
            return
        self._consuming_again = asyncio.get_running_loop().create_task(self._consume_after(pause, why, ask_first))

    async def _consume_after(self, pause: float, why: str, ask_first: bool) -> None:
        """Consume again after `pause`, and again after a growing pause (`retry_pause` doubled each time, at most
        MAX_TRANSIENT_PAUSE) until it worked. A reopen meanwhile asks for nothing more: this task consumes on
        whatever channel is under the robust one by then."""
        await asyncio.sleep(pause)
        failures = 0
        while not self._leaving:
            try:
                if ask_first:
                    await self._queue_exists()
                await self._consume()
            except Exception as exc:  # the queue is gone, or the channel closed again: after a pause, once more
                wait = return_pause(self._retry_pause, failures, MAX_TRANSIENT_PAUSE)
                failures += 1
                name = self._queue_name
                logger.warning("could not consume %s again (%s): %r; in %s", name, why, exc, format_duration(wait))
                await asyncio.sleep(wait)
                continue
            logger.info("consuming %s again: %s", self._queue_name, why)
            return

    async def _queue_exists(self) -> None:
        """Raise unless the queue exists, asked on a channel of its own: consuming from a missing queue (deleted:
        the broker cancelled the consumer for it) would close the consumer's channel, and a robust channel whose
        reopening fails (its queue still missing) stays closed."""
        async with self._broker.isolated_channel() as channel:
            await channel.queue_declare(self._queue_name, passive=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # came on a channel that closed since: its tag is void, the broker redelivers it
        tag = message.delivery_tag
        assert tag is not None  # consumed with acknowledgements
        if message.consumer_tag in self._cancelled_tags:
            return  # for a consumer the broker cancelled: it took the delivery back
        self._acks.delivered(channel, tag)  # first, in delivery order: no multiple ack may pass it unfinished
        if self._stopping:
            return  # left unacknowledged: the broker re-delivers it after we close
        task = asyncio.current_task()
        assert task is not None
        self._in_flight[task] = message.consumer_tag
        try:
            await self._window.wait(held=len(self._in_flight))
            if self._stopping:
                return  # it waited in the batch window when the stop began: not started, left to the broker
            if await self._process(message) and message.consumer_tag not in self._cancelled_tags:
                self._acks.ack(channel, tag)
            else:
                self._acks.settled(channel, tag)
        except asyncio.CancelledError:
            if message.processed or message.consumer_tag in self._cancelled_tags:
                self._acks.settled(channel, tag)  # acknowledged by the handler (a drain), or taken back by the broker
            raise
        finally:
            self._in_flight.pop(task, None)

    async def _process(self, message: AbstractIncomingMessage) -> bool:
        """Run the handler: True when the delivery is to be acknowledged, False when it was rejected."""
        try:
            if self._gate is None:
                await self._handler(message)
            else:
                async with self._gate.hold(len(message.body)):
                    await self._handler(message)
        except PermanentError as exc:
            logger.error("rejecting unprocessable message %s to held: %s", message.message_id, exc)
            await message.reject(requeue=False)
        except TransientError as exc:
            logger.warning("returning message %s to %s: %s", message.message_id, self._queue_name, exc)
            await self._return(message, MAX_TRANSIENT_PAUSE)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "handler crashed on message %s; returning it to %s (returned %d times before, held after %d)",
                message.message_id,
                self._queue_name,
                returned_count(message),
                DELIVERY_LIMIT,
            )
            await self._return(message, MAX_CRASH_PAUSE)
        else:
            return True
        return False

    async def _return(self, message: AbstractIncomingMessage, cap: float) -> None:
        """Back to the queue after a pause, as a failed delivery that counts toward the delivery limit."""
        await asyncio.sleep(return_pause(self._retry_pause, returned_count(message), cap))
        await message.reject(requeue=True)

    async def stop(self, drain_seconds: float) -> None:
        """Stop taking deliveries, wait up to `drain_seconds` for in-flight ones, and send their
        acknowledgements (written to the connection when this returns)."""
        self._stopping = True
        self._window.close()
        if isinstance(self._channel, AbstractRobustChannel):
            self._channel.reopen_callbacks.discard(self._on_reopen)
            self._channel.close_callbacks.discard(self._on_channel_close)
        if self._consuming_again is not None:
            self._consuming_again.cancel()
        if self._queue is not None and self._tag is not None and self._broker.connected:
            try:  # a robust channel waits for the broker to come back: bounded, as the rest of the stop
                async with asyncio.timeout(CANCEL_TIMEOUT):
                    await self._queue.cancel(self._tag)
            except TimeoutError:
                logger.warning("could not cancel consumer on %s in time (broker unreachable?)", self._queue_name)
            except Exception as exc:  # the channel may already be gone; deliveries return anyway
                logger.warning("could not cancel consumer on %s: %s", self._queue_name, exc)
        if self._in_flight:
            logger.info("draining %d in-flight deliveries from %s", len(self._in_flight), self._queue_name)
            _, pending = await asyncio.wait(set(self._in_flight), timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:  # let cancelled handlers finish their clean-up before the connection closes
                await asyncio.wait(pending, timeout=5)
        try:
            async with asyncio.timeout(ACK_FLUSH_TIMEOUT):
                await self._acks.flush()
        except TimeoutError:  # the connection is stuck: whatever was not acknowledged comes back (at least once)
            logger.warning("could not send the last acknowledgements on %s in time", self._queue_name)
