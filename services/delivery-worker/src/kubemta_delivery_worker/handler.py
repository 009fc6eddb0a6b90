"""The consumer of `deliver`: deliver the job, publish its DeliveryResult to `results`, then
return (the consumer acknowledges the job only after the result was confirmed).

The job travels back unchanged inside the result (the queue-manager keeps no state and
counts the attempts itself). A failed publish raises PublishFailed, so the job is not
acknowledged and is delivered again (at least once: the recipient may get a duplicate).
"""

import logging
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import RESULTS
from kubemta_common.bus_messages import decode
from kubemta_common.timestamps import now_timestamp
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.replies import outcome_name

logger = logging.getLogger(__name__)

REPORTER = "delivery-worker"
RESULT_TYPE = message_pb2.DeliveryResult.DESCRIPTOR.full_name


class ResultPublisher(Protocol):
    """What the handler needs from the publisher (kubemta_common.amqp.publisher.Publisher)."""

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, message_type: str) -> None: ...


class DeliverHandler:
    """Handles one `deliver` message."""

    def __init__(self, deliverer: Deliverer, publisher: ResultPublisher) -> None:
        self._deliverer = deliverer
        self._publisher = publisher

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        await self.process(decode(message_pb2.DeliveryJob, message.body))

    async def process(self, job: message_pb2.DeliveryJob) -> message_pb2.DeliveryResult:
        """Deliver `job` and publish its result; returns the published result."""
        attempted_at = now_timestamp()
        recipients = await self._deliverer.deliver(job)
        result = message_pb2.DeliveryResult(
            job=job, recipients=recipients, attempted_at=attempted_at, reporter=REPORTER
        )
        await self._publisher.publish(
            RESULTS, result.SerializeToString(), message_id=job.job_id, message_type=RESULT_TYPE
        )
        outcomes = [outcome_name(r.outcome) for r in recipients]
        logger.info(
            "delivery attempt finished: %d delivered, %d deferred, %d bounced; result published",
            outcomes.count("delivered"),
            outcomes.count("deferred"),
            outcomes.count("bounced"),
            extra={"queue_id": job.queue_id, "job_id": job.job_id, "domain": job.domain},
        )
        return result
