"""The bus against a real RabbitMQ: topology, confirmed publishing, acknowledged consuming, faults."""

import asyncio

import aio_pika
import pytest

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import HELD, INBOUND, ROUTE, retry_queue_name
from kubemta_common.errors import PermanentError, PublishFailed, TransientError
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost
from tests.harness.tcp_proxy import TcpProxy

pytestmark = pytest.mark.broker


async def _broker(url: str, delays: tuple[float, ...] = (1.0, 300.0)) -> Broker:
    broker = Broker(url, name="test", retry_delays=delays, reconnect_interval=0.2)
    async with asyncio.timeout(20):
        await broker.run()
    return broker


async def test_topology_is_declared_idempotently_and_publishes_are_confirmed(vhost: Vhost) -> None:
    first = await _broker(vhost.url)
    second = await _broker(vhost.url)  # same declarations again: no precondition failure
    try:
        await Publisher(first, 5).publish_raw(INBOUND, b"payload", message_id="Q1", message_type="t")
        message = await first_message(vhost.url, INBOUND)
        assert message.body == b"payload"
        assert message.message_id == "Q1"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        depths = vhost.queue_depths()
        assert {"inbound", "route", "deliver", "results", "held", "retry.1s", "retry.5m"} <= set(depths)
    finally:
        await first.close()
        await second.close()


async def test_unroutable_publish_is_an_error_not_a_silent_drop(vhost: Vhost) -> None:
    broker = await _broker(vhost.url)
    try:
        with pytest.raises(PublishFailed, match="unroutable") as refused:
            await Publisher(broker, 5).publish_raw("no-such-queue", b"x", message_id="Q", message_type="t")
        assert not refused.value.maybe_published  # returned by the broker: it cannot hold it
    finally:
        await broker.close()


async def test_retry_queue_dead_letters_back_to_route_after_its_ttl(vhost: Vhost) -> None:
    broker = await _broker(vhost.url)
    try:
        await Publisher(broker, 5).publish_raw(retry_queue_name(1), b"job", message_id="J", message_type="t")
        assert vhost.queue_depths()[ROUTE] == 0
        message = await first_message(vhost.url, ROUTE, within=15)
        assert message.body == b"job"
        assert message.headers["x-first-death-reason"] == "expired"
    finally:
        await broker.close()


async def test_broker_down_or_silent_means_publish_failed(vhost: Vhost) -> None:
    host, port = vhost.node.host, vhost.node.port
    proxy = TcpProxy("127.0.0.1", host, port)
    await proxy.start()
    broker = await _broker(vhost.node.url(vhost.name).replace(f":{port}/", f":{proxy.port}/"))
    publisher = Publisher(broker, 2)
    try:
        await publisher.publish_raw(INBOUND, b"ok", message_id="A", message_type="t")
        proxy.blackhole()
        with pytest.raises(PublishFailed, match="no confirm") as silent:
            await publisher.publish_raw(INBOUND, b"lost?", message_id="B", message_type="t")
        assert silent.value.maybe_published  # sent, no answer: the broker may have it
        await proxy.cut()
        await asyncio.sleep(0.5)
        with pytest.raises(PublishFailed):
            await publisher.publish_raw(INBOUND, b"down", message_id="C", message_type="t")
        await proxy.restore()
        async with asyncio.timeout(30):
            while True:  # the robust channel is restored shortly after the connection
                try:
                    await publisher.publish_raw(INBOUND, b"again", message_id="D", message_type="t")
                    break
                except PublishFailed:
                    await asyncio.sleep(0.2)
    finally:
        await broker.close()
        await proxy.stop()


async def test_consumer_acks_after_handler_requeues_transient_and_holds_permanent(vhost: Vhost) -> None:
    broker = await _broker(vhost.url)
    publisher = Publisher(broker, 5)
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handler(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(message.body)
        if message.body == b"transient" and seen.count(b"transient") == 1:
            raise TransientError("try again")
        if message.body == b"poison":
            raise PermanentError("cannot parse")
        if seen.count(b"transient") == 2 and b"ok" in seen:
            done.set()

    consumer = Consumer(broker, INBOUND, handler, prefetch=4, retry_pause=0.1)
    try:
        await consumer.start()
        for body in (b"transient", b"poison", b"ok"):
            await publisher.publish_raw(INBOUND, body, message_id=body.decode(), message_type="t")
        async with asyncio.timeout(15):
            await done.wait()
        held = await first_message(vhost.url, HELD)
        assert held.body == b"poison"
        await consumer.stop(1)
        await asyncio.sleep(0.2)
        assert vhost.queue_depths()[INBOUND] == 0
    finally:
        await broker.close()


async def test_drain_leaves_unfinished_work_in_the_queue(vhost: Vhost) -> None:
    broker = await _broker(vhost.url)
    started = asyncio.Event()

    async def slow(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        started.set()
        await asyncio.sleep(30)

    consumer = Consumer(broker, INBOUND, slow, prefetch=1)
    try:
        await consumer.start()
        await Publisher(broker, 5).publish_raw(INBOUND, b"slow", message_id="S", message_type="t")
        async with asyncio.timeout(10):
            await started.wait()
        await consumer.stop(0.2)
    finally:
        await broker.close()
    message = await first_message(vhost.url, INBOUND)  # not acknowledged: back in the queue, not lost
    assert message.body == b"slow"
