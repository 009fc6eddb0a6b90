"""Acknowledged consuming with a clean drain.

The handler runs for each delivery; the delivery is acknowledged only when the
handler returned (its outputs were confirmed by then). A `TransientError` returns the
delivery to the queue after a pause; a `PermanentError` (e.g. an undecodable message)
rejects it, which dead-letters it to `held`. On shutdown the consumer stops taking
deliveries, lets in-flight handlers finish within the drain time, and leaves the rest
unacknowledged so the broker re-delivers them.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from kubemta_common.amqp.broker import Broker
from kubemta_common.errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class Consumer:
    """Consumes one queue with one handler."""

    def __init__(self, broker: Broker, queue_name: str, handler: Handler, *, prefetch: int, retry_pause: float = 1.0):
        self._broker = broker
        self._queue_name = queue_name
        self._handler = handler
        self._prefetch = prefetch
        self._retry_pause = retry_pause
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Wait for the broker, then start consuming."""
        channel = await self._broker.consumer_channel(self._prefetch)
        self._queue = await channel.get_queue(self._queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message)
        logger.info("consuming %s (prefetch %d)", self._queue_name, self._prefetch)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            return  # left unacknowledged: the broker re-delivers it after we close
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            await self._handler(message)
        except PermanentError as exc:
            logger.error("rejecting unprocessable message %s to held: %s", message.message_id, exc)
            await message.reject(requeue=False)
        except TransientError as exc:
            logger.warning("returning message %s to %s: %s", message.message_id, self._queue_name, exc)
            await asyncio.sleep(self._retry_pause)
            await message.nack(requeue=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("handler crashed on message %s; returning it to %s", message.message_id, self._queue)
            await asyncio.sleep(self._retry_pause)
            await message.nack(requeue=True)
        else:
            await message.ack()

    async def stop(self, drain_seconds: float) -> None:
        """Stop taking deliveries and wait up to `drain_seconds` for in-flight ones."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception as exc:  # the channel may already be gone; deliveries return anyway
                logger.warning("could not cancel consumer on %s: %s", self._queue_name, exc)
        if self._in_flight:
            logger.info("draining %d in-flight deliveries from %s", len(self._in_flight), self._queue_name)
            _, pending = await asyncio.wait(set(self._in_flight), timeout=drain_seconds)
            for task in pending:
                task.cancel()
            if pending:  # let cancelled handlers finish their clean-up before the connection closes
                await asyncio.wait(pending, timeout=5)
