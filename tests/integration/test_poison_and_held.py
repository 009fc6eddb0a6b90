"""Poison messages and `held` against the real RabbitMQ of this machine (3.10), with the version logic for 4.x.

What can be shown here: a handler that fails every time has its message returned with `basic.reject`
(which every RabbitMQ version, 4.3 included, counts toward `x-delivery-limit`), so it reaches `held`
after DELIVERY_LIMIT returns while other messages flow; `held` keeps a message however often an
operator's tool returns it; a `held` declared otherwise before does not stop a service from starting.
RabbitMQ 4.x cannot run here: its part (`x-delivery-limit: -1` on `held`, not counting nacks since 4.3)
is decided from RabbitMQ's documentation and checked at the level of the arguments we declare.
"""

import asyncio
import logging

import aio_pika
import pytest

from kubemta_common.amqp import consumer as consumer_module
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import DELIVERY_LIMIT, HELD, INBOUND
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def _broker(url: str) -> Broker:
    broker = Broker(url, name="test", retry_delays=(1.0,), reconnect_interval=0.2)
    async with asyncio.timeout(20):
        await broker.run()
    return broker


async def _get(queue: aio_pika.abc.AbstractQueue) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of `queue`, unacknowledged (bounded wait: a returned message is back at once)."""
    async with asyncio.timeout(10):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.02)


async def test_a_message_that_fails_every_time_is_held_after_the_limit_and_others_flow(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumer_module, "MAX_CRASH_PAUSE", 0.05)  # the doubling pause, kept short for the test
    broker = await _broker(vhost.url)
    publisher = Publisher(broker, 5)
    attempts: dict[bytes, int] = {}
    good_done = asyncio.Event()

    async def handler(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        attempts[message.body] = attempts.get(message.body, 0) + 1
        if message.body.startswith(b"poison"):
            raise RuntimeError("injected fault: a bug the message triggers")
        if attempts.keys() >= {b"good-1", b"good-2"}:
            good_done.set()

    consumer = Consumer(broker, INBOUND, handler, prefetch=4, retry_pause=0.01)
    try:
        await consumer.start()
        for body in (b"poison-1", b"good-1", b"good-2"):
            await publisher.publish_raw(INBOUND, body, message_id=body.decode(), message_type="t")
        async with asyncio.timeout(30):
            await good_done.wait()
        held = await first_message(vhost.url, HELD, within=30)
        assert held.body == b"poison-1"
        assert held.headers["x-first-death-reason"] == "delivery_limit"
        assert attempts[b"poison-1"] == DELIVERY_LIMIT + 1  # the first delivery and DELIVERY_LIMIT returns
        assert (attempts[b"good-1"], attempts[b"good-2"]) == (1, 1)
    finally:
        await consumer.stop(1)
        await broker.close()


async def test_held_keeps_a_message_however_often_it_is_returned(vhost: Vhost) -> None:
    """An operator peeking with get + requeue (or a tool dying while holding it) never loses a held message.

    On 3.x `held` has no delivery limit; declared with 4.x's -1 here it would drop the message at its first return.
    """
    broker = await _broker(vhost.url)
    try:
        await Publisher(broker, 5).publish_raw(HELD, b"kept", message_id="K", message_type="t")
        connection = await aio_pika.connect(vhost.url)
        try:
            channel = await connection.channel()
            queue = await channel.get_queue(HELD)
            for _ in range(25):  # more than 4.x's default limit of 20
                message = await _get(queue)
                await message.reject(requeue=True)
        finally:
            await connection.close()
        assert (await first_message(vhost.url, HELD)).body == b"kept"
    finally:
        await broker.close()


async def test_a_held_queue_declared_otherwise_before_does_not_stop_the_service(
    vhost: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(HELD, durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    finally:
        await connection.close()
    caplog.set_level(logging.ERROR, logger="kubemta_common.amqp.topology")
    broker = await _broker(vhost.url)
    try:
        assert broker.connected
        assert "'held' queue exists with other arguments" in caplog.text
        assert "delivery-limit" in caplog.text
        await Publisher(broker, 5).publish_raw(HELD, b"still bound", message_id="B", message_type="t")
        assert (await first_message(vhost.url, HELD)).body == b"still bound"
    finally:
        await broker.close()
