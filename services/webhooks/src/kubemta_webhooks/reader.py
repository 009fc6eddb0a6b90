"""The leader: one replica at a time reads the `events` stream and queues a WebhookDelivery per matching fate event.

Leadership is an exclusive queue, `webhooks.leader`, declared on a connection of the leader's own (not
the service's robust one: a lock must not come back by itself after a reconnect). RabbitMQ refuses
another connection's declaration with RESOURCE_LOCKED while that connection lives, so the other
replicas try again every KUBEMTA_WEBHOOK_LEADER_RETRY; when the leader's connection closes (the
process died, the network broke, the broker restarted) the queue is gone and the next try wins.
Everything the leader does happens on that connection: its stream consumer, its webhook publishes and
its checkpoint writes all end with the lock.

Reading (at least once): the leader reads the checkpoint (checkpoint.py), consumes `events` from it
(`x-stream-offset`: an offset, or a time on the very first start) with a prefetch and manual acks
(streams require both), and for each batch of records publishes the batch's webhooks to `webhooks`
with publisher confirms, then writes the checkpoint after the batch: after every batch that queued
webhooks, otherwise at most every KUBEMTA_WEBHOOK_CHECKPOINT_INTERVAL. A publish that is not
confirmed ends the leadership (the connection is closed and the next leader, maybe this replica,
re-reads from the checkpoint): a webhook may be queued twice, never skipped.

A stream consumer over AMQP 0-9-1 is delivered whole chunks, so the first records it gets may precede
the requested offset; their `x-stream-offset` header says so and they are skipped.
"""

import asyncio
import contextlib
import logging
import time
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
    DeliveryMode,
)
from google.protobuf.message import DecodeError
from pamqp import commands as spec

from kubemta.v1 import events_pb2, webhooks_pb2
from kubemta_common.amqp.broker import server_version
from kubemta_common.amqp.streams import EVENTS
from kubemta_common.amqp.topology import EXCHANGE
from kubemta_common.events.stream_reader import OFFSET_HEADER, StreamRecord, record_of
from kubemta_common.timestamps import now_timestamp
from kubemta_webhooks import metrics
from kubemta_webhooks.checkpoint import Checkpoint, first_checkpoint, read_checkpoint, write_checkpoint
from kubemta_webhooks.endpoints import EndpointsFile
from kubemta_webhooks.fates import fate_of, matches, payload
from kubemta_webhooks.queues import LEADER, SEND, WEBHOOKS, declare_checkpoint, declare_send_queues

logger = logging.getLogger(__name__)

PREFETCH = 200
"""Stream records (EventBatch messages of up to 500 events) in flight to the leader."""
BATCH_RECORDS = PREFETCH // 2
"""Most records handled together (the broker keeps sending the other half of the prefetch meanwhile)."""
FLUSH_SECONDS = 0.05
"""Longest a record waits for more to arrive before its batch is handled."""
IDLE_SECONDS = 1.0
"""Without a record for this long the reader is at the tail: lag 0, and a pending checkpoint is written."""

_CLOSED = None


class StreamLeader:
    """Competes for the leader lock and, while it holds it, turns the stream's fate events into webhooks."""

    def __init__(
        self,
        url: str,
        endpoints: EndpointsFile,
        *,
        tiers: tuple[float, ...],
        retry: float,
        checkpoint_interval: float,
        publish_timeout: float,
        name: str = "kubemta-webhooks-leader",
    ) -> None:
        self._url = url
        self._endpoints = endpoints
        self._tiers = tiers
        self._retry = retry
        self._checkpoint_interval = checkpoint_interval
        self._publish_timeout = publish_timeout
        self._name = name
        self.connection: AbstractConnection | None = None
        """The leader connection while this replica leads (closing it gives the lock up)."""
        self.leading = asyncio.Event()
        """Set while this replica holds the lock and reads."""
        self.reading = asyncio.Event()
        """Set once the leader's consumer is attached to the stream (leading, and the broker's consume-ok came):
        an event appended after it is read, whatever the checkpoint's start."""
        self.last_offset: int | None = None
        """The last stream offset handled (its webhooks confirmed)."""

    async def run(self) -> None:
        """Compete for the lock and lead while holding it, until cancelled."""
        while True:
            try:
                connection = await aio_pika.connect(self._url, client_properties={"connection_name": self._name})
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                logger.warning("webhooks leader: broker unreachable, again in %.1fs: %s", self._retry, exc)
                await asyncio.sleep(self._retry)
                continue
            try:
                await self._compete(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker gone, a publish not confirmed: give the lock up, try again
                logger.warning("webhooks leader: stopped reading (%r); again in %.1fs", exc, self._retry)
            finally:
                self.leading.clear()
                self.reading.clear()
                metrics.READER_LEADER.set(0)
                self.connection = None
                await _close(connection)
            await asyncio.sleep(self._retry)

    async def _compete(self, connection: AbstractConnection) -> None:
        """Try for the lock every `retry` seconds while the connection lives; lead once it is ours."""
        while not connection.is_closed:
            if self._endpoints.loaded and await self._acquire(connection):
                self.connection = connection
                self.leading.set()
                metrics.READER_LEADER.set(1)
                logger.info("webhooks leader: holding %s, reading the %s stream", LEADER, EVENTS)
                await self._lead(connection)
                return
            await asyncio.sleep(self._retry)

    async def _acquire(self, connection: AbstractConnection) -> bool:
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(LEADER, durable=False, exclusive=True, auto_delete=False)
        except aiormq.exceptions.ChannelLockedResource:
            return False
        finally:
            await _close(channel)
        return True

    async def _lead(self, connection: AbstractConnection) -> None:
        # The version property is read the same way on a plain connection (broker.server_version only uses getattr).
        await declare_checkpoint(connection, server_version(cast(AbstractRobustConnection, connection)))
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_send_queues(publish, self._tiers)
        exchange = await publish.get_exchange(EXCHANGE, ensure=False)
        checkpoint = await read_checkpoint(publish)
        if checkpoint is None:
            checkpoint = first_checkpoint()
            await write_checkpoint(exchange, checkpoint, within=self._publish_timeout)
            logger.info("webhooks leader: no checkpoint yet, reading the %s stream from %s", EVENTS, checkpoint.since)
        consume = await connection.channel(publisher_confirms=False)
        await consume.set_qos(prefetch_count=PREFETCH)
        deliveries: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        for channel in (publish, consume):
            underlay = await channel.get_underlay_channel()
            underlay.closing.add_done_callback(lambda _: deliveries.put_nowait(_CLOSED))

        async def on_message(message: AbstractIncomingMessage) -> None:
            deliveries.put_nowait(message)

        queue = await consume.get_queue(EVENTS, ensure=False)
        tag = await queue.consume(on_message, arguments={OFFSET_HEADER: checkpoint.start})

        def on_cancel(frame: spec.Basic.Cancel) -> None:
            if frame.consumer_tag == tag:
                deliveries.put_nowait(_CLOSED)

        (await consume.get_underlay_channel()).on_consumer_cancel_callbacks.add(on_cancel)
        logger.info("webhooks leader: reading the %s stream from %s", EVENTS, checkpoint.start)
        self.reading.set()
        reading = _Reading(
            self,
            exchange,
            checkpoint,
            publish_timeout=self._publish_timeout,
            checkpoint_interval=self._checkpoint_interval,
        )
        await reading.run(deliveries)

    def handled(self, offset: int) -> None:
        """Called with the last offset whose webhooks were confirmed."""
        self.last_offset = offset

    def webhooks_of(self, record: StreamRecord) -> list[webhooks_pb2.WebhookDelivery]:
        """The webhooks of one stream record (an EventBatch): one per matching (fate event, endpoint)."""
        try:
            batch = events_pb2.EventBatch.FromString(record.body)
        except DecodeError:
            logger.warning("events offset %d is no EventBatch (%d bytes): skipped", record.offset, len(record.body))
            return []
        endpoints = self._endpoints.endpoints.values()
        out: list[webhooks_pb2.WebhookDelivery] = []
        for event in batch.events:
            fate = fate_of(event)
            if fate is None:
                continue
            targets = [endpoint.name for endpoint in endpoints if matches(endpoint, fate, event)]
            if not targets:
                continue
            metrics.EVENTS_MATCHED.inc()
            body = payload(fate, event)
            created = now_timestamp()
            out.extend(
                webhooks_pb2.WebhookDelivery(
                    delivery_id=event.event_id,
                    endpoint=name,
                    event_type=f"message.{fate}",
                    payload=body,
                    created=created,
                    queue_id=event.queue_id,
                )
                for name in targets
            )
        return out


class _Reading:
    """One leadership's read loop: batches of records -> confirmed webhooks -> checkpoint."""

    def __init__(
        self,
        leader: StreamLeader,
        exchange: AbstractExchange,
        checkpoint: Checkpoint,
        *,
        publish_timeout: float,
        checkpoint_interval: float,
    ) -> None:
        self._leader = leader
        self._publish_timeout = publish_timeout
        self._checkpoint_interval = checkpoint_interval
        self._exchange = exchange
        self._after = (checkpoint.next_offset - 1) if checkpoint.next_offset is not None else None
        """Records at or before this offset were handled (a chunk delivered from its start repeats them)."""
        self._written = checkpoint.next_offset
        self._last_write = time.monotonic()

    async def run(self, deliveries: "asyncio.Queue[AbstractIncomingMessage | None]") -> None:
        while True:
            batch = await _next_batch(deliveries)
            if batch is None:
                logger.info("webhooks leader: the stream consumer stopped")
                return
            if not batch:
                metrics.READER_LAG.set(0)
                await self._checkpoint(force=False)
                continue
            queued = await self._handle(batch)
            await max(batch, key=lambda message: message.delivery_tag or 0).ack(multiple=True)
            await self._checkpoint(force=queued > 0)

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> int:
        records = sorted(
            (record for record in map(record_of, batch) if record is not None), key=lambda record: record.offset
        )
        records = [record for record in records if self._after is None or record.offset > self._after]
        if not records:
            return 0
        webhooks = [webhook for record in records for webhook in self._leader.webhooks_of(record)]
        if webhooks:
            await asyncio.gather(*(self._publish(webhook) for webhook in webhooks))
        self._after = records[-1].offset
        self._leader.handled(self._after)
        stamp = records[-1].timestamp
        if stamp is not None:
            metrics.READER_LAG.set(max(0.0, time.time() - stamp.timestamp()))
        return len(webhooks)

    async def _publish(self, webhook: webhooks_pb2.WebhookDelivery) -> None:
        message = aio_pika.Message(
            webhook.SerializeToString(),
            delivery_mode=DeliveryMode.PERSISTENT,
            content_type="application/x-protobuf",
            message_id=webhook.delivery_id,
            type=SEND.type_name,
        )
        async with asyncio.timeout(self._publish_timeout):
            await self._exchange.publish(message, WEBHOOKS, mandatory=True)

    async def _checkpoint(self, *, force: bool) -> None:
        if self._after is None or self._written == self._after + 1:
            return
        if not force and time.monotonic() - self._last_write < self._checkpoint_interval:
            return
        checkpoint = Checkpoint(self._after + 1, None)
        await write_checkpoint(self._exchange, checkpoint, within=self._publish_timeout)
        self._written = checkpoint.next_offset
        self._last_write = time.monotonic()


async def _next_batch(
    deliveries: "asyncio.Queue[AbstractIncomingMessage | None]",
) -> list[AbstractIncomingMessage] | None:
    """What arrived (at most BATCH_RECORDS, FLUSH_SECONDS after the first); [] after IDLE_SECONDS without any;
    None when the consumer stopped."""
    try:
        async with asyncio.timeout(IDLE_SECONDS):
            first = await deliveries.get()
    except TimeoutError:
        return []
    if first is None:
        return None
    batch = [first]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FLUSH_SECONDS
    while len(batch) < BATCH_RECORDS:
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                message = await deliveries.get()
        except TimeoutError:
            break
        if message is None:
            deliveries.put_nowait(_CLOSED)  # hand this batch over first, stop at the next call
            break
        batch.append(message)
    return batch


async def _close(closable: AbstractChannel | AbstractConnection) -> None:
    """Close a channel or connection, bounded; one that is gone already is fine."""
    with contextlib.suppress(TimeoutError, aiormq.exceptions.AMQPError, RuntimeError, OSError):
        async with asyncio.timeout(5):
            await closable.close()
