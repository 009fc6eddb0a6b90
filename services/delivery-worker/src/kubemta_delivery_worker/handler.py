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

from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import returned_count
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.amqp.topology import DELIVERY_LIMIT
from kubemta_common.bus_messages import Encoded, encoded_with_field
from kubemta_common.errors import PermanentError
from kubemta_common.logs import message_context, sanitize
from kubemta_common.timestamps import now_timestamp
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.job_checks import malformation
from kubemta_delivery_worker.metrics import JOBS_HELD
from kubemta_delivery_worker.replies import outcome_name

logger = logging.getLogger(__name__)

REPORTER = "delivery-worker"


class DeliverHandler:
    """Handles one `deliver` message: the job, decoded by the stage, and the delivery it came in."""

    def __init__(self, deliverer: Deliverer, publisher: BusPublisher, *, delivery_limit: int = DELIVERY_LIMIT) -> None:
        self._deliverer = deliverer
        self._publisher = publisher
        self._delivery_limit = delivery_limit

    async def __call__(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage) -> None:
        with message_context(sanitize(job.queue_id), sanitize(job.job_id)):  # sanitized: a malformed job's too
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
            extra={"domain": job.domain, "delivery_count": returned},
        )
        raise PermanentError(f"job {job.job_id} returned {returned} times; held as poison")

    async def process(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage | None = None) -> None:
        """Deliver `job` and publish its result (`message` is the delivery it came in, acknowledged by the caller)."""
        attempted_at = now_timestamp()
        recipients = await self._deliverer.deliver(job)  # cancelled here: nothing published
        body = result_body(job, recipients, attempted_at, message.body if message is not None else None)
        publish = asyncio.ensure_future(self._publisher.publish(stages.RESULTS, body, message_id=job.job_id))
        del body
        try:
            await asyncio.shield(publish)
        except asyncio.CancelledError:
            # The mail went out: report it rather than leave the job to be delivered twice.
            await publish
            if message is not None:
                await message.ack()
            logger.info(
                "result published during the drain; job acknowledged",
            )
            raise
        outcomes = [outcome_name(r.outcome) for r in recipients]
        logger.info(
            "delivery attempt finished: %d delivered, %d deferred, %d bounced; result published",
            outcomes.count("delivered"),
            outcomes.count("deferred"),
            outcomes.count("bounced"),
            extra={"domain": job.domain},
        )


def result_body(
    job: message_pb2.DeliveryJob,
    recipients: list[message_pb2.RecipientResult],
    attempted_at: Timestamp,
    received: bytes | None,
) -> Encoded[message_pb2.DeliveryResult]:
    """The serialised DeliveryResult for `job`: the job travels back unchanged, its content too unless every
    recipient was delivered (nothing is left to send or bounce, so the content's trip ends here, and it is
    cleared from `job` itself).

    The job as it came (`received`, the delivery's body) is put into the result as it is: a protobuf
    message field is its own serialisation after a tag and a length (protobuf encoding, "Embedded
    messages"), so a 10 MB job is not decoded, copied into the result and encoded again.
    """
    head = message_pb2.DeliveryResult(recipients=recipients, attempted_at=attempted_at, reporter=REPORTER)
    if all(r.outcome == message_pb2.OUTCOME_DELIVERED for r in recipients):
        job.ClearField("content")  # done with it: the job is not sent again
        job_bytes = job.SerializeToString()
    else:
        job_bytes = received if received is not None else job.SerializeToString()
    return encoded_with_field(head, message_pb2.DeliveryResult.JOB_FIELD_NUMBER, [job_bytes])


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
        extra={"domain": sanitize(job.domain)},
    )
    # No "malformed" here: the consumer logs this text too, and the line above is the one to find.
    raise PermanentError(f"job {sanitize(job.job_id)} not delivered: {reason}")
