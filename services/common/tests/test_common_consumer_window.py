"""A consumer with a batch window against the real RabbitMQ: the deliveries of one window are handled in one
loop turn and settled by one multiple acknowledgement; a stop releases the window without handling what
waited in it, and the broker gives those deliveries back (nothing lost, nothing handled twice)."""

import asyncio
from collections.abc import Callable

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import ROUTE
from tests.harness.broker_fixtures import record_acks, started_broker
from tests.harness.ingress_kit import eventually
from tests.harness.loop_turns import LoopTurns
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def until(condition: Callable[[], bool]) -> None:
    await eventually(condition, within=10.0)


async def publish(broker: Broker, count: int, apart: float = 0.0) -> None:
    publisher = Publisher(broker, 5)
    for number in range(1, count + 1):
        await publisher.publish_raw(ROUTE, b"x", message_id=f"M{number}", message_type="t")
        await asyncio.sleep(apart)


async def test_the_deliveries_of_one_window_start_in_one_turn_and_one_ack_settles_them(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    acks = record_acks(monkeypatch)
    broker = await started_broker(vhost.url)
    turns = LoopTurns()
    started: dict[str, int] = {}

    async def handler(message: AbstractIncomingMessage) -> None:
        started[message.message_id or ""] = turns.count

    consumer = Consumer(broker, ROUTE, handler, prefetch=5, batch_window=30)  # longer than any bound here
    try:
        await consumer.start()
        await publish(broker, 5, apart=0.02)  # one by one, each in a loop turn of its own
        await until(lambda: len(started) == 5)  # the fifth filled the prefetch: the window closed at once
        assert sorted(started) == [f"M{number}" for number in range(1, 6)]
        assert len(set(started.values())) == 1, started  # one loop turn for the five
        await until(lambda: bool(acks))
        await asyncio.sleep(0.2)
        assert acks == [(5, True)]  # and one frame settles them
    finally:
        turns.stop()
        await consumer.stop(5)
        await broker.close()
    await until(lambda: vhost.queue_depths()[ROUTE] == 0)


async def test_a_stop_leaves_what_waits_in_the_window_to_the_broker_which_gives_it_back(vhost: Vhost) -> None:
    broker = await started_broker(vhost.url)
    handled: list[str] = []

    async def handler(message: AbstractIncomingMessage) -> None:
        handled.append(message.message_id or "")

    waiting = Consumer(broker, ROUTE, handler, prefetch=10, batch_window=30)  # longer than any bound here
    try:
        await waiting.start()
        await publish(broker, 3)
        await until(lambda: len(waiting._in_flight) == 3)  # all three wait in the window
        async with asyncio.timeout(10):  # the stop does not wait for the window's 30 s
            await waiting.stop(30)
        assert handled == []
    finally:
        await broker.close()
    again = await started_broker(vhost.url)
    redelivered: list[tuple[str, bool]] = []

    async def second(message: AbstractIncomingMessage) -> None:
        redelivered.append((message.message_id or "", bool(message.redelivered)))

    consumer = Consumer(again, ROUTE, second, prefetch=10)
    try:
        await consumer.start()
        await until(lambda: len(redelivered) == 3)
        assert sorted(redelivered) == [("M1", True), ("M2", True), ("M3", True)]
    finally:
        await consumer.stop(5)
        await again.close()
