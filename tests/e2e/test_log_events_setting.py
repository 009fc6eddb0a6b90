"""End to end: KUBEMTA_LOG_EVENTS reaches the running services. With `delivered,bounced` the ingress writes no
event line and the delivery worker only its `delivered` one, while every event still reaches the `events` stream
(the tracker's and the webhooks' source)."""

import asyncio

import aiormq
import pytest

from kubemta.v1 import events_pb2
from kubemta_common.amqp.streams import EVENTS
from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

RECIPIENT = "bob@mx.e2e.test"
WITHIN = 30.0


async def stream_kinds(url: str, queue_id: str, wanted: set[str]) -> list[str]:
    """The kinds of the events on the `events` stream for `queue_id`, read from the first offset until `wanted`
    were all seen (bounded)."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=100)
        seen: list[str] = []
        done = asyncio.Event()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            batch = events_pb2.EventBatch.FromString(message.body)
            seen.extend(e.WhichOneof("kind") or "" for e in batch.events if e.queue_id == queue_id)
            assert message.delivery_tag is not None
            await message.channel.basic_ack(message.delivery_tag)
            if wanted <= set(seen):
                done.set()

        await channel.basic_consume(EVENTS, on_message, arguments={"x-stream-offset": "first"})
        async with asyncio.timeout(WITHIN):
            await done.wait()
        return seen
    finally:
        await connection.close()


async def test_only_the_chosen_kinds_are_log_lines_and_the_stream_gets_every_event(
    stack: Stack, world: MailWorld, vhost: Vhost
) -> None:
    smtp_port = free_port()
    stack.env.update(world.env(smtp_listen=f"127.0.0.1:{smtp_port}"))
    stack.env["KUBEMTA_LOG_EVENTS"] = "delivered, bounced"
    await stack.start()
    mx1 = world.peer("mx1")
    await mx1.start()
    outcome = await send(f"127.0.0.1:{smtp_port}", SENDER, [RECIPIENT], make_message(SENDER, [RECIPIENT], "logged?"))
    assert outcome.data is not None and outcome.data[0] == 250, outcome.data
    queue_id = outcome.data[1].decode().removeprefix("2.0.0 Ok: queued as ")
    await mx1.wait_for_messages(1, timeout=WITHIN)

    kinds = await stream_kinds(vhost.url, queue_id, {"received", "queued", "attempted", "delivered"})
    assert {"received", "queued", "routed", "attempted", "delivered"} <= set(kinds)

    def logged() -> dict[str, list[str]]:
        return {
            service: [str(e["event"]) for e in stack.log_events(service) if e.get("event")]
            for service in ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
        }

    async def worker_logged_it() -> bool:  # the line of the loop turn that delivered it is written a turn later
        return "delivered" in logged()["delivery-worker"]

    await eventually(worker_logged_it, within=WITHIN, what="the worker's event=delivered line")
    assert logged() == {"ingress": [], "queue-manager": [], "dns-resolver": [], "delivery-worker": ["delivered"]}
