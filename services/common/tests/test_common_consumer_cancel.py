"""A consumer the broker cancels, or whose channel the broker closes, consumes again by itself, with a new tag.

RabbitMQ cancels a consumer (`basic.cancel`) when its queue is deleted and, from 4.3 on, when one of its deliveries
stays unacknowledged for `consumer_timeout`; 3.x and 4.0-4.2 close the channel instead. Consuming again with the
same tag after a cancel is what made RabbitMQ 4.3.0-4.3.6 close the whole connection (530 NOT_ALLOWED, the tag
still held by the broker) and aio-pika's reconnection wait for itself (tests/e2e/test_consumer_timeout.py runs that
on 4.3.6 with `make test-rabbitmq`). Here, against this machine's broker, a deleted queue gives the cancel.
"""

import asyncio
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import ROUTE, declare_stages
from tests.harness.broker_fixtures import record_acks, started_broker
from tests.harness.ingress_kit import eventually
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    await eventually(condition, within=within)


def recording() -> tuple[list[str], Callable[[AbstractIncomingMessage], Awaitable[None]]]:
    """A handler that notes each delivery's message id, and the list it notes them in."""
    handled: list[str] = []

    async def handler(message: AbstractIncomingMessage) -> None:
        handled.append(message.message_id or "")

    return handled, handler


async def test_a_consumer_the_broker_cancels_drops_its_deliveries_and_consumes_again_with_a_new_tag(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    acks = record_acks(monkeypatch)
    broker = await started_broker(vhost.url)
    handled: list[str] = []
    cancelled: list[str] = []
    release = asyncio.Event()

    async def handler(message: AbstractIncomingMessage) -> None:
        name = message.message_id or ""
        try:
            if name == "held":
                await release.wait()  # in flight when the broker cancels the consumer
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        handled.append(name)

    consumer = Consumer(broker, ROUTE, handler, prefetch=5, retry_pause=1.0)
    other = await aio_pika.connect(vhost.url)
    try:
        await consumer.start()
        first_tag = consumer._tag
        publisher = Publisher(broker, 5)
        await publisher.publish_raw(ROUTE, b"x", message_id="held", message_type="t")
        await until(lambda: consumer._in_flight != {})

        channel = await other.channel()
        await channel.queue_delete(ROUTE, if_unused=False, if_empty=False)  # the broker cancels the consumer
        await until(lambda: cancelled == ["held"])  # its delivery went with the queue: its handler stops
        await declare_stages(channel, (1.0,))  # the queue is back before the consumer's pause ends
        await until(lambda: consumer._tag is not None, within=15)
        assert consumer._tag != first_tag

        await publisher.publish_raw(ROUTE, b"x", message_id="after", message_type="t")
        await until(lambda: handled == ["after"])
        await until(lambda: bool(acks))
        release.set()
        await asyncio.sleep(0.2)
        assert acks == [(2, True)], acks  # "after" (tags count per channel); none for "held", taken back
        assert cancelled == ["held"] and handled == ["after"]
    finally:
        release.set()
        await consumer.stop(5)
        await broker.close()
        await other.close()
    await until(lambda: vhost.queue_depths()[ROUTE] == 0)


async def test_a_consumer_whose_channel_the_broker_closed_consumes_again_on_the_reopened_one(vhost: Vhost) -> None:
    broker = await started_broker(vhost.url)
    handled, handler = recording()
    consumer = Consumer(broker, ROUTE, handler, prefetch=5)
    try:
        await consumer.start()
        first_tag = consumer._tag
        assert consumer._channel is not None
        underlay = await consumer._channel.get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await underlay.basic_ack(424242)  # an unknown delivery tag: the broker closes the channel
            await underlay.basic_qos(prefetch_count=5)  # (the ack has no answer; this one meets the close)
        await until(lambda: consumer._tag is not None and consumer._tag != first_tag, within=15)

        await Publisher(broker, 5).publish_raw(ROUTE, b"x", message_id="after", message_type="t")
        await until(lambda: handled == ["after"])
    finally:
        await consumer.stop(5)
        await broker.close()
    await until(lambda: vhost.queue_depths()[ROUTE] == 0)


async def test_a_cancelled_consumer_keeps_trying_until_its_queue_is_back(vhost: Vhost) -> None:
    broker = await started_broker(vhost.url)
    handled, handler = recording()
    consumer = Consumer(broker, ROUTE, handler, prefetch=5, retry_pause=0.5)
    other = await aio_pika.connect(vhost.url)
    try:
        await consumer.start()
        channel = await other.channel()
        await channel.queue_delete(ROUTE, if_unused=False, if_empty=False)
        await asyncio.sleep(3.0)  # several tries fail meanwhile: no queue to consume from
        assert consumer._tag is None
        await declare_stages(channel, (1.0,))
        await until(lambda: consumer._tag is not None, within=20)
        await Publisher(broker, 5).publish_raw(ROUTE, b"x", message_id="after", message_type="t")
        await until(lambda: handled == ["after"])
    finally:
        await consumer.stop(5)
        await broker.close()
        await other.close()
    await until(lambda: vhost.queue_depths()[ROUTE] == 0)
