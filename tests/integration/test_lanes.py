"""The two lanes against the real RabbitMQ: the publisher sends a large body to its stage's large lane, a
large retry dead-letters to route.large, and small ones stay where they were."""

import asyncio

import pytest

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import DELIVER, INBOUND, LARGE_BODY, RESULTS, ROUTE, large, retry_queue_name
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def _broker(url: str) -> Broker:
    broker = Broker(url, name="lanes", retry_delays=(1.0,), reconnect_interval=0.2)
    async with asyncio.timeout(20):
        await broker.run()
    return broker


@pytest.mark.parametrize("stage", [INBOUND, ROUTE, DELIVER, RESULTS])
async def test_a_large_body_goes_to_the_large_lane_and_a_small_one_stays(vhost: Vhost, stage: str) -> None:
    broker = await _broker(vhost.url)
    try:
        publisher = Publisher(broker, 5)
        await publisher.publish_raw(stage, b"s" * LARGE_BODY, message_id="small", message_type="t")
        await publisher.publish_raw(stage, b"L" * (LARGE_BODY + 1), message_id="large", message_type="t")
        assert (await first_message(vhost.url, stage)).message_id == "small"
        assert (await first_message(vhost.url, large(stage))).message_id == "large"
    finally:
        await broker.close()


async def test_a_large_retry_waits_in_its_own_tier_and_comes_back_to_route_large(vhost: Vhost) -> None:
    broker = await _broker(vhost.url)
    try:
        await Publisher(broker, 5).publish_raw(
            retry_queue_name(1), b"J" * (2 * LARGE_BODY), message_id="J#1", message_type="t"
        )
        message = await first_message(vhost.url, large(ROUTE), within=15)
        assert message.message_id == "J#1"
        assert message.headers["x-first-death-queue"] == large(retry_queue_name(1))
        assert message.headers["x-first-death-reason"] == "expired"
    finally:
        await broker.close()
