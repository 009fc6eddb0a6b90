"""The consumer of `deliver`: deliver the job, publish its DeliveryResult to `results`, then
return (the consumer acknowledges the job only after the result was confirmed).

The job travels back unchanged inside the result (the queue-manager keeps no state and
counts the attempts itself). A failed publish raises PublishFailed, so the job is not
acknowledged and is delivered again (at least once: the recipient may get a duplicate).

Held jobs, rejected to `held` with an error line and `kubemta_jobs_held_total{reason}`
so they neither block `deliver` nor disappear:
- malformed: a job that fails the checks of job_checks.py (no domain, no recipients, no
  route hosts, a port above 65535) is held on its first delivery, without delivering.
- poison: RabbitMQ counts how often a message went back to a quorum queue
  (`x-delivery-count`: handler crashes, failed publishes, a worker gone mid-job). A job
  already returned `delivery_limit` times is not tried again. (A crash that kills the
  process is caught by the queue's own `x-delivery-limit`, which dead-letters to `held` too.)

Drain: a delivery cancelled by the drain deadline publishes nothing (its job is
re-delivered). Once a delivery is done, its result is reported even if the
cancellation comes during the publish: the publish completes and the job is
acknowledged here, since delivering it again would duplicate the mail.
"""

import asyncio
import logging
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp.consumer import returned_count
from kubemta_common.amqp.topology import DELIVERY_LIMIT, RESULTS
from kubemta_common.bus_messages import decode
from kubemta_common.errors import PermanentError
from kubemta_common.logs import sanitize
from kubemta_common.timestamps import now_timestamp
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.job_checks import malformation
from kubemta_delivery_worker.metrics import JOBS_HELD
from kubemta_delivery_worker.replies import outcome_name

logger = logging.getLogger(__name__)

REPORTER = "delivery-worker"
RESULT_TYPE = message_pb2.DeliveryResult.DESCRIPTOR.full_name


class ResultPublisher(Protocol):
    """What the handler needs from the publisher (kubemta_common.amqp.publisher.Publisher)."""

    async def publish(self, routing_key: str, body: bytes, *, message_id: str, message_type: str) -> None: ...


class DeliverHandler:
    """Handles one `deliver` message."""

    def __init__(
        self, deliverer: Deliverer, publisher: ResultPublisher, *, delivery_limit: int = DELIVERY_LIMIT
    ) -> None:
        self._deliverer = deliverer
        self._publisher = publisher
        self._delivery_limit = delivery_limit

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        job = decode(message_pb2.DeliveryJob, message.body)
        _hold_if_malformed(job)
        self._hold_if_poison(job, returned_count(message))
        await self.process(job, message)

    def _hold_if_poison(self, job: message_pb2.DeliveryJob, returned: int) -> None:
        """Raise PermanentError (the consumer rejects the job to `held`) once it came back too often."""
        if returned < self._delivery_limit:
            return
        JOBS_HELD.labels(reason="poison").inc()
        logger.error(
            "job returned to the queue %d times without a result (limit %d): moving it to held",
            returned,
            self._delivery_limit,
            extra={"queue_id": job.queue_id, "job_id": job.job_id, "domain": job.domain, "delivery_count": returned},
        )
        raise PermanentError(f"job {job.job_id} returned {returned} times; held as poison")

    async def process(
        self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage | None = None
    ) -> message_pb2.DeliveryResult:
        """Deliver `job` and publish its result; returns the published result."""
        attempted_at = now_timestamp()
        recipients = await self._deliverer.deliver(job)  # cancelled here: nothing published
        result = message_pb2.DeliveryResult(
            job=job, recipients=recipients, attempted_at=attempted_at, reporter=REPORTER
        )
        if all(r.outcome == message_pb2.OUTCOME_DELIVERED for r in recipients):
            result.job.ClearField("content")  # nothing left to send or bounce: the content's trip ends here
        publish = asyncio.ensure_future(
            self._publisher.publish(
                RESULTS, result.SerializeToString(), message_id=job.job_id, message_type=RESULT_TYPE
            )
        )
        try:
            await asyncio.shield(publish)
        except asyncio.CancelledError:
            # The mail went out: report it rather than leave the job to be delivered twice.
            await publish
            if message is not None:
                await message.ack()
            logger.info(
                "result published during the drain; job acknowledged",
                extra={"queue_id": job.queue_id, "job_id": job.job_id},
            )
            raise
        outcomes = [outcome_name(r.outcome) for r in recipients]
        logger.info(
            "delivery attempt finished: %d delivered, %d deferred, %d bounced; result published",
            outcomes.count("delivered"),
            outcomes.count("deferred"),
            outcomes.count("bounced"),
            extra={"queue_id": job.queue_id, "job_id": job.job_id, "domain": job.domain},
        )
        return result


def _hold_if_malformed(job: message_pb2.DeliveryJob) -> None:
    """Raise PermanentError (the consumer rejects the job to `held`) when the job fails job_checks."""
    reason = malformation(job)
    if reason is None:
        return
    JOBS_HELD.labels(reason="malformed").inc()
    logger.error(
        "malformed job %s: %s: moving it to held",
        sanitize(job.job_id),
        reason,
        extra={"queue_id": sanitize(job.queue_id), "job_id": sanitize(job.job_id), "domain": sanitize(job.domain)},
    )
    # No "malformed" here: the consumer logs this text too, and the line above is the one to find.
    raise PermanentError(f"job {sanitize(job.job_id)} not delivered: {reason}")
