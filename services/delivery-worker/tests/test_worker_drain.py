"""The `deliver` handler under the drain and with poison jobs: a delivery cancelled mid-
transaction publishes nothing and closes its connection; one cancelled while publishing
finishes the publish and acknowledges; a job returned too often is held, not delivered."""

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.message import Message

from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import Handler, subscribe_deliveries
from kubemta_common.amqp.stages import Stage
from kubemta_common.bus_messages import Encoded
from kubemta_common.errors import PermanentError
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.pool import ConnectionPool
from tests.harness.fake_publisher import FakePublisher


def consumed(handler: DeliverHandler) -> Handler:
    """What the consumer of `deliver` calls with a delivery: the stage decodes the job for the handler."""
    return subscribe_deliveries(stages.DELIVER, handler).on_delivery


class _Message(SimpleNamespace):
    acks = 0

    async def ack(self) -> None:
        self.acks += 1


def incoming(body: bytes, **headers: Any) -> _Message:
    return _Message(body=body, message_id="m1", headers=headers, redelivered=False, routing_key="deliver")


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def as_incoming(message: _Message) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, message)


async def test_cancelled_mid_delivery_publishes_nothing_and_closes_the_connection(
    start_peer, host_of, job, options, publisher
):
    peer = await start_peer(data_delay=5.0)
    pool: ConnectionPool[Any] = ConnectionPool(idle_seconds=5, per_host=2, total=64)
    handler = consumed(DeliverHandler(Deliverer(options, pool=pool), publisher))
    message = incoming(job([host_of("mx1.dest.test", peer)]).SerializeToString())

    task = asyncio.ensure_future(handler(as_incoming(message)))
    await until(lambda: peer.in_data > 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)

    assert publisher.published == []
    assert message.acks == 0, "left to the consumer: unacknowledged, so the broker delivers it again"
    assert len(pool) == 0
    assert len(peer._protocols) == 0, "the connection was closed, not cached"


class _SlowPublisher(FakePublisher):
    started = False

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        self.started = True
        await asyncio.sleep(0.3)
        await super().publish(stage, message, message_id=message_id)


async def test_cancelled_while_publishing_finishes_the_publish_and_acknowledges(start_peer, host_of, job, options):
    peer = await start_peer(rules={"later": "450 4.2.0 try again later"})  # a deferral: the result is published
    publisher = _SlowPublisher()
    handler = consumed(DeliverHandler(Deliverer(options), publisher))
    message = incoming(job([host_of("mx1.dest.test", peer)], ["user@dest.test", "later@dest.test"]).SerializeToString())

    task = asyncio.ensure_future(handler(as_incoming(message)))
    await until(lambda: publisher.started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(peer.messages) == 1
    assert len(publisher.published) == 1
    assert message.acks == 1


async def test_a_job_returned_too_often_is_held_with_a_metric(start_peer, host_of, job, options, publisher, metric):
    peer = await start_peer()
    handler = consumed(DeliverHandler(Deliverer(options), publisher, delivery_limit=3))
    body = job([host_of("mx1.dest.test", peer)]).SerializeToString()
    held_before = metric("kubemta_jobs_held_total", reason="poison")

    with pytest.raises(PermanentError, match="returned 3 times"):
        await handler(as_incoming(incoming(body, **{"x-delivery-count": 3})))

    assert metric("kubemta_jobs_held_total", reason="poison") == held_before + 1
    assert peer.connections == 0
    assert publisher.published == []


async def test_a_job_below_the_limit_is_delivered(start_peer, host_of, job, options, publisher, metric):
    peer = await start_peer()
    handler = consumed(DeliverHandler(Deliverer(options), publisher, delivery_limit=3))
    held_before = metric("kubemta_jobs_held_total", reason="poison")

    await handler(
        as_incoming(incoming(job([host_of("mx1.dest.test", peer)]).SerializeToString(), **{"x-delivery-count": 2}))
    )

    assert len(peer.messages) == 1
    assert publisher.published == []  # delivered everywhere: the job ends at the worker
    assert metric("kubemta_jobs_held_total", reason="poison") == held_before
