"""The delivery-worker's crash path against a real RabbitMQ: a job whose delivery raises
an unexpected exception every time (a fault injected where a bug would be) is returned
to `deliver` by the consumer ("handler crashed"), and once the queue counted
`delivery_limit` returns (`x-delivery-count`), the worker's handler rejects it to `held`,
unchanged, with `kubemta_jobs_held_total{reason="poison"}`, while other jobs on the same
consumer are delivered (a job delivered to every recipient ends at the worker: no result).

The real Broker, Consumer, Publisher and DeliverHandler; only the Deliverer is a fake.
"""

import asyncio
import logging
from collections import Counter
from typing import cast

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer, subscribe_deliveries
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import DELIVER, HELD, RESULTS
from kubemta_delivery_worker.deliverer import AttemptReport, Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker

DELIVERY_LIMIT = 3


class FaultyDeliverer:
    """Stands in for Deliverer: raises RuntimeError for the poison job, delivers every other one."""

    def __init__(self, poison_job_id: str) -> None:
        self.poison_job_id = poison_job_id
        self.calls: Counter[str] = Counter()

    async def deliver(self, job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
        self.calls[job.job_id] += 1
        if job.job_id == self.poison_job_id:
            raise RuntimeError("injected fault: a bug in the delivery code")
        return [
            message_pb2.RecipientResult(
                recipient=rcpt, outcome=message_pb2.OUTCOME_DELIVERED, smtp_code=250, status="2.0.0", diagnostic="ok"
            )
            for rcpt in job.recipients
        ]

    async def attempt(self, job: message_pb2.DeliveryJob) -> AttemptReport:
        """What the handler calls: `deliver`'s results as an attempt report."""
        return AttemptReport(await self.deliver(job))


def make_job(queue_id: str) -> message_pb2.DeliveryJob:
    host = message_pb2.RouteHost(hostname="mx1.dest.test", address="192.0.2.1", port=25)
    return message_pb2.DeliveryJob(
        queue_id=queue_id,
        job_id=f"{queue_id}.dest.test",
        sender="alice@sender.test",
        domain="dest.test",
        recipients=["bob@dest.test"],
        content=b"Subject: hi\r\n\r\nHello.\r\n",
        attempts=1,
        route=message_pb2.Route(kind=message_pb2.TRANSPORT_KIND_SMTP, hosts=[host], source="mx"),
    )


async def _good_job_done(deliverer: FaultyDeliverer, good: message_pb2.DeliveryJob, vhost: Vhost) -> None:
    """Wait (bounded) until the good job on the same consumer was delivered and acknowledged."""
    for _ in range(300):
        if deliverer.calls[good.job_id] >= 1 and not (await asyncio.to_thread(vhost.queue_depths))[DELIVER]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the good job was not delivered and acknowledged within 30 s")


def held_total() -> float:
    return REGISTRY.get_sample_value("kubemta_jobs_held_total", {"reason": "poison"}) or 0.0


async def test_a_job_that_crashes_the_handler_ends_in_held_and_others_flow(
    vhost: Vhost, caplog: pytest.LogCaptureFixture
) -> None:
    poison, good = make_job("POISON1"), make_job("GOOD1")
    deliverer = FaultyDeliverer(poison.job_id)
    broker = Broker(vhost.url, name="test", retry_delays=(1.0,), reconnect_interval=0.2)
    consumer: Consumer | None = None
    held_before = held_total()
    caplog.set_level(logging.INFO, logger="kubemta_common.amqp.consumer")
    caplog.set_level(logging.INFO, logger="kubemta_delivery_worker")
    try:
        async with asyncio.timeout(20):
            await broker.run()
        publisher = Publisher(broker, 5)
        handler = DeliverHandler(cast(Deliverer, deliverer), publisher, delivery_limit=DELIVERY_LIMIT)
        consumer = Consumer(
            broker, DELIVER, subscribe_deliveries(stages.DELIVER, handler).on_delivery, prefetch=4, retry_pause=0.1
        )
        await consumer.start()

        for job in (poison, good):
            await publisher.publish(stages.DELIVER, job, message_id=job.job_id)

        held = await first_message(vhost.url, HELD, within=30)
        assert message_pb2.DeliveryJob.FromString(held.body) == poison, "held unchanged"
        await _good_job_done(deliverer, good, vhost)
        await asyncio.sleep(0.5)  # a poison job delivered again would reach the fake by now

        # x-delivery-count 0, 1, 2: delivered, crashed, returned; 3: held without delivering.
        assert deliverer.calls == {poison.job_id: DELIVERY_LIMIT, good.job_id: 1}
        assert held_total() == held_before + 1
        crashes = [r for r in caplog.records if "handler crashed" in r.getMessage()]
        assert len(crashes) == DELIVERY_LIMIT
        [line] = [r for r in caplog.records if "moving it to held" in r.getMessage()]
        assert line.queue_id == "POISON1"  # type: ignore[attr-defined]  # from the log context (kubemta_common.logs)
        depths = await asyncio.to_thread(vhost.queue_depths)
        assert (depths[DELIVER], depths[HELD], depths[RESULTS]) == (0, 0, 0), "each job went exactly once"
    finally:
        if consumer is not None:
            await consumer.stop(1)
        await broker.close()
