"""One pass over a queue with basic.get: offer each message it held at the start to a decision once, acknowledge
those whose copy went elsewhere (publish confirmed, THEN ack), and return the rest where they were.

How a queue is scanned (`QueueScan.scan`): on a channel of its own, the queue's message count is read
(passive declare) and at most that many messages are fetched with basic.get, without
auto-ack. Every fetched message stays unacknowledged until the end of the scan, so none is
fetched twice; only its delivery tag is kept (the body is dropped after the decision, so a scan
of a long queue holds one body at a time). A message that is moved is acknowledged right after
its copy was confirmed; the others are returned with basic.reject (requeue) at the end, and a
failure in between (a publish not confirmed, a lost connection) stops the scan: the broker
returns every unacknowledged message when the channel closes, so the worst case is a message
both moved and still in place (at least once), never one in neither.

RabbitMQ versions (3.10+ and 4.x; tests/test_admin_ops.py checks each point on the broker at hand,
3.10.8 on the development machines):
- a returned message keeps its TTL in the retry queue: a quorum queue's message TTL counts from
  when the message was enqueued, and a return does not enqueue it anew, so a job the flush
  passed over still comes back to `route` (dead-lettered as expired) when its delay is over;
- every return counts as a delivery attempt towards a quorum queue's delivery limit, with
  basic.reject on every version (basic.nack stopped counting in 4.3, which would be kinder to
  the retry queues but differ between versions). The retry queues declare no limit: on 3.x
  they have none; on 4.x the default (20) applies and a retry job passed over by 20 scans is
  dead-lettered to its target, `route`: an early retry, never a loss. `held` has no limit on
  3.x and `x-delivery-limit: -1` (none) on 4.x (topology.py); a `held` declared before an
  upgrade to 4.x keeps the default of 20 with no dead-letter target, which the services log
  as an error together with the policy that fixes it;
- basic.get works on quorum queues on both (slower than a consumer: one round trip per
  message, so a scan of 100,000 messages takes tens of seconds, and the HTTP request as long).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from kubemta_common.amqp.broker import Broker
from kubemta_common.errors import MessageTooLarge, TransientError

logger = logging.getLogger(__name__)

Take = Callable[[AbstractIncomingMessage], Awaitable[bool]]
"""Decides about one fetched message: True when its copy went elsewhere (confirmed) and it is to be acknowledged."""


class BrokerUnavailable(TransientError):
    """The broker is not reachable: the command did nothing (the API answers 503)."""


class QueueScan:
    """Scans queues of `broker` (see the module docstring); every broker round trip bounded by `timeout`."""

    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self._broker = broker
        self._timeout = timeout

    async def scan(self, queue: str, take: Take) -> int:
        """Offer each message `queue` held at the start to `take` once; acknowledge those it took; how many it
        took. BrokerUnavailable when the broker fails on the way (what was taken stays taken)."""
        channel = await self._channel()
        kept: list[int] = []
        moved = 0
        try:
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                logger.warning("queue %s does not exist; skipped", queue)
                return 0
            assert declared.declaration_result.message_count is not None
            for _ in range(declared.declaration_result.message_count):
                message = await declared.get(no_ack=False, fail=False, timeout=self._timeout)
                if message is None:
                    break
                assert message.delivery_tag is not None
                try:
                    took = await take(message)
                except MessageTooLarge as exc:
                    logger.warning("message %s on %s left where it is: %s", message.message_id, queue, exc)
                    took = False
                except BaseException:
                    kept.append(message.delivery_tag)
                    raise
                if took:
                    await message.ack()
                    moved += 1
                else:
                    kept.append(message.delivery_tag)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"scanning {queue} failed after {moved} moved: {exc!r}") from None
        finally:
            await self._return(channel, kept)
        return moved

    async def _channel(self) -> AbstractChannel:
        if not self._broker.connected:
            raise BrokerUnavailable("the broker is not reachable")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._broker.consumer_channel(prefetch=1)
        except (TimeoutError, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            raise BrokerUnavailable(f"no channel to the broker: {exc!r}") from None

    @staticmethod
    async def _return(channel: AbstractChannel, tags: list[int]) -> None:
        """Reject (requeue) what was kept, then close the channel (which returns anything still unacknowledged)."""
        try:
            if tags and not channel.is_closed:
                underlay = await channel.get_underlay_channel()
                for tag in tags:
                    await underlay.basic_reject(tag, requeue=True)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            logger.warning(
                "returning %d messages failed (the broker returns them as the channel closes): %r", len(tags), exc
            )
        finally:
            if not channel.is_closed:
                await channel.close()


__all__ = ["BrokerUnavailable", "QueueScan", "Take"]
