"""The publisher on aiormq's channel directly (no aio_pika.Message), against the real RabbitMQ: every refusal is
still a PublishFailed, returns are matched to their own publish, and a closed publish channel is survived."""

import asyncio

import aio_pika
import pytest

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import EXCHANGE, INBOUND
from kubemta_common.errors import PublishFailed
from tests.harness.broker_fixtures import started_broker
from tests.harness.queues import first_message, take_all
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def test_a_nack_is_publish_failed_and_not_maybe_published(vhost: Vhost, broker: Broker) -> None:
    connection = await aio_pika.connect(vhost.url)
    try:  # a queue that refuses every message: the broker answers the publish with basic.nack
        channel = await connection.channel()
        full = await channel.declare_queue("full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
        await full.bind(EXCHANGE, routing_key="full")
    finally:
        await connection.close()
    with pytest.raises(PublishFailed, match="broker refused") as refused:
        await Publisher(broker, 5).publish_raw("full", b"x", message_id="N", message_type="t")
    assert not refused.value.maybe_published


async def test_returns_among_concurrent_publishes_fail_only_their_own_publish(vhost: Vhost, broker: Broker) -> None:
    publisher = Publisher(broker, 5)
    keys = [INBOUND if number % 2 else "no-such-queue" for number in range(20)]
    results = await asyncio.gather(
        *(
            publisher.publish_raw(key, f"{number}".encode(), message_id=f"M{number}", message_type="t")
            for number, key in enumerate(keys)
        ),
        return_exceptions=True,
    )
    for key, result in zip(keys, results, strict=True):
        if key == INBOUND:
            assert result is None
        else:
            assert isinstance(result, PublishFailed) and "unroutable" in str(result)
    assert sorted(await take_all(vhost.url, INBOUND)) == sorted(f"{n}".encode() for n in range(1, 20, 2))


async def test_a_publish_after_the_publish_channel_closed_fails_or_goes_to_its_successor(vhost: Vhost) -> None:
    broker = await started_broker(vhost.url)
    publisher = Publisher(broker, 5)
    try:
        await publisher.publish_raw(INBOUND, b"before", message_id="B", message_type="t")
        old = await broker.publish_channel()
        await old.basic_ack(9999)  # a channel error: the broker closes the publish channel
        for _ in range(1000):  # bounded: 10 s
            if old.is_closed:
                break
            await asyncio.sleep(0.01)
        assert old.is_closed
        for _ in range(100):  # bounded: the robust channel opens its successor within a few seconds
            try:
                await publisher.publish_raw(INBOUND, b"after", message_id="A", message_type="t")
                break
            except PublishFailed as exc:
                assert exc.maybe_published  # as before: a closed channel is reported like any channel failure
                await asyncio.sleep(0.1)
        else:
            pytest.fail("never published on the reopened channel")
        assert await broker.publish_channel() is not old
        assert (await first_message(vhost.url, INBOUND)).body == b"before"
        assert (await first_message(vhost.url, INBOUND)).body == b"after"
    finally:
        await broker.close()
