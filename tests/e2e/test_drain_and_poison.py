"""Graceful drain and poison jobs with the services as processes and a real RabbitMQ.

- SIGTERM while a delivery waits for a slow MX's reply to the final dot: with enough
  drain time the delivery completes and its result is published (nothing delivered
  again); with a short drain the delivery is cut, nothing is published, the job goes
  back to `deliver`, and the next worker delivers it exactly once.
- The other consumer services stop on SIGTERM within their drain time and lose nothing.
- A malformed job (a route host port above 65535, which no resolver produces) goes to
  `held` unchanged on its first delivery, without crashing the worker (one "malformed"
  log line, `kubemta_jobs_held_total{reason="malformed"}`), while other mail keeps
  flowing. (A job that crashes the handler every time is held after
  KUBEMTA_DELIVERY_LIMIT returns: tests/integration/test_worker_poison.py.)
- A quorum queue's `x-delivery-limit` dead-letters a job whose consumer dies without
  acknowledging.
"""

import asyncio

import aio_pika
import pytest

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import DELIVER, EXCHANGE, HELD, declare_topology
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

WORKER = "delivery-worker"


async def _start(stack: Stack, world: MailWorld, **env: str) -> str:
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(world.env(smtp_listen=server, **env))
    await stack.start()
    return server


async def _in_data(peer: ScriptedPeer) -> None:
    async def waiting() -> bool:
        return peer.in_data >= 1

    await eventually(waiting, within=30, what="the worker to send the message and wait for the reply")


REPORTED = ("result published", "job finished here (no result)")
"""The worker's line once a job's outcome is on the bus: its result, or (delivered everywhere) its delivered event."""


def _published(stack: Stack, name: str = WORKER) -> list[dict[str, object]]:
    return [e for e in stack.log_events(name) if any(line in str(e.get("message", "")) for line in REPORTED)]


async def _get(
    queue: aio_pika.abc.AbstractQueue, within: float, *, no_ack: bool = True
) -> aio_pika.abc.AbstractIncomingMessage:
    async with asyncio.timeout(within):
        while True:
            message = await queue.get(fail=False, no_ack=no_ack)
            if message is not None:
                return message
            await asyncio.sleep(0.1)


async def _held(vhost: Vhost, within: float = 30.0) -> aio_pika.abc.AbstractIncomingMessage:
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        return await _get(await channel.get_queue(HELD), within)
    finally:
        await connection.close()


async def test_sigterm_with_enough_drain_time_finishes_the_delivery(stack: Stack, world: MailWorld) -> None:
    server = await _start(stack, world, drain_seconds="20s")
    mx1 = world.peer("mx1", data_delay=3.0)
    await mx1.start()
    await send(server, SENDER, ["drain@mx.e2e.test"], make_message(SENDER, ["drain@mx.e2e.test"], "drain ok"))
    await _in_data(mx1)

    codes = await stack.stop(WORKER)  # SIGTERM: stop taking jobs, finish this one

    assert codes == {WORKER: 0}
    assert [m.rcpt_tos for m in mx1.messages] == [["drain@mx.e2e.test"]]
    assert len(_published(stack)) == 1, "the outcome was recorded before the worker exited"
    mx1.data_delay = 0.0
    await stack.start((WORKER,))
    await asyncio.sleep(4)  # a re-delivered job would reach the (now fast) peer by now
    assert len(mx1.messages) == 1, "the job was acknowledged: nothing delivered twice"


async def test_sigterm_with_a_short_drain_returns_the_job_and_it_is_delivered_once(
    stack: Stack, world: MailWorld
) -> None:
    server = await _start(stack, world, drain_seconds="1s")
    mx1 = world.peer("mx1", data_delay=60.0)
    await mx1.start()
    await send(server, SENDER, ["cut@mx.e2e.test"], make_message(SENDER, ["cut@mx.e2e.test"], "drain cut"))
    await _in_data(mx1)
    first_log = stack.log(WORKER)

    codes = await stack.stop(WORKER)

    assert codes == {WORKER: 0}
    assert not any(line in first_log + stack.log(WORKER) for line in REPORTED), "a cut delivery reports nothing"

    async def connection_closed() -> bool:
        return mx1.in_data == 0

    await eventually(connection_closed, within=10, what="the cut delivery's connection to close")
    assert mx1.messages == []
    mx1.data_delay = 0.0
    await stack.start((WORKER,))
    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    assert delivered.rcpt_tos == ["cut@mx.e2e.test"]
    await asyncio.sleep(3)
    assert len(mx1.messages) == 1, "delivered exactly once more"
    assert len(_published(stack)) == 1


@pytest.mark.parametrize("service", ["queue-manager", "dns-resolver"])
async def test_other_consumers_stop_on_sigterm_and_lose_nothing(stack: Stack, world: MailWorld, service: str) -> None:
    server = await _start(stack, world, drain_seconds="2s")
    mx1 = world.peer("mx1")
    await mx1.start()

    codes = await stack.stop(service)
    assert codes == {service: 0}
    assert "stopped" in stack.log(service)
    await send(server, SENDER, ["later@mx.e2e.test"], make_message(SENDER, ["later@mx.e2e.test"], "waits"))
    await asyncio.sleep(1)
    assert mx1.messages == []
    await stack.start((service,))
    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    assert delivered.rcpt_tos == ["later@mx.e2e.test"]


def _malformed_job(world: MailWorld) -> message_pb2.DeliveryJob:
    # A route no resolver would produce: port 70000 does not fit TCP's 16 bits. The worker's
    # checks hold it before connecting (asyncio's getaddrinfo would raise OverflowError).
    host = message_pb2.RouteHost(hostname="mx1.e2e.test", address=world.address("mx1"), port=70000)
    return message_pb2.DeliveryJob(
        queue_id="POISON1",
        job_id="POISON1.poison.e2e.test",
        sender=SENDER,
        domain="poison.e2e.test",
        recipients=["victim@poison.e2e.test"],
        content=b"Subject: poison\r\n\r\nx\r\n",
        attempts=1,
        route=message_pb2.Route(kind=message_pb2.TRANSPORT_KIND_SMTP, hosts=[host], source="mx"),
    )


async def test_a_malformed_job_goes_to_held_on_its_first_delivery(stack: Stack, world: MailWorld, vhost: Vhost) -> None:
    server = await _start(stack, world)
    mx1 = world.peer("mx1")
    await mx1.start()
    malformed = _malformed_job(world)
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(
            aio_pika.Message(malformed.SerializeToString(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=DELIVER,
        )
    finally:
        await connection.close()
    await send(server, SENDER, ["fine@mx.e2e.test"], make_message(SENDER, ["fine@mx.e2e.test"], "flows"))

    [delivered] = await mx1.wait_for_messages(1, timeout=30)
    assert delivered.rcpt_tos == ["fine@mx.e2e.test"], "other jobs keep flowing"
    held = await _held(vhost)
    assert message_pb2.DeliveryJob.FromString(held.body) == malformed, "held unchanged"
    assert await stack.metric(WORKER, "kubemta_jobs_held_total", reason="malformed") == 1
    assert await stack.metric(WORKER, "kubemta_jobs_held_total", reason="poison") == 0
    [line] = [e for e in stack.log_events(WORKER) if "malformed" in str(e.get("message", ""))]
    assert line["queue_id"] == "POISON1"
    assert "moving it to held" in str(line["message"])
    assert "handler crashed" not in stack.log(WORKER), "held on its first delivery, nothing crashed"
    await asyncio.sleep(1)
    depths = await asyncio.to_thread(vhost.queue_depths)
    assert (depths.get(DELIVER, 0), depths.get(HELD, 0)) == (0, 0), "`held` had exactly this job, `deliver` is empty"


async def test_quorum_delivery_limit_dead_letters_a_job_whose_consumer_dies(vhost: Vhost) -> None:
    """What the lead's topology change adds (`x-delivery-limit` on the stage queues), on a queue of its own."""
    limit = 2
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, [1.0])
        exchange = await channel.get_exchange(EXCHANGE)
        queue = await channel.declare_queue(
            "deliver-limited",
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": EXCHANGE,
                "x-dead-letter-routing-key": HELD,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                "x-delivery-limit": limit,
            },
        )
        await queue.bind(exchange, routing_key="deliver-limited")
        await exchange.publish(
            aio_pika.Message(b"killer", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key="deliver-limited"
        )
        for attempt in range(limit + 1):
            consumer = await connection.channel()
            message = await _get(await consumer.get_queue("deliver-limited"), 10, no_ack=False)
            assert message.headers.get("x-delivery-count", 0) == attempt
            await consumer.close()  # the "process" dies holding it, unacknowledged
    finally:
        await connection.close()

    held = await _held(vhost, within=15)
    assert held.body == b"killer"
