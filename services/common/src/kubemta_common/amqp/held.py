"""Putting a job on the `held` queue for an operator, and where a release sends it back.

`held` receives two kinds of messages: jobs an operator's HOLD decision stopped (published here,
with the `x-kubemta-*` headers below), and messages RabbitMQ dead-lettered there (poison or
unprocessable ones, with RabbitMQ's `x-death` header naming their original queue). A release
(the tracker's admin operations) sends each back where `release_target` says.
"""

from collections.abc import Mapping
from datetime import datetime

from kubemta.v1 import message_pb2
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.topology import HELD, ROUTE

RELEASE_TO = "x-kubemta-release-to"
QUEUE_ID = "x-kubemta-queue-id"
JOB_ID = "x-kubemta-job-id"
DECISION_ID = "x-kubemta-decision-id"
JOB_TYPE = message_pb2.DeliveryJob.DESCRIPTOR.full_name


def held_headers(*, queue_id: str, job_id: str, decision_id: str, release_to: str = ROUTE) -> dict[str, str]:
    """The headers of an admin-held job."""
    return {RELEASE_TO: release_to, QUEUE_ID: queue_id, JOB_ID: job_id, DECISION_ID: decision_id}


async def hold_job(
    publisher: HeldPublisher, job: message_pb2.DeliveryJob | bytes, *, queue_id: str, job_id: str, decision_id: str
) -> None:
    """Publish a DeliveryJob (or its serialisation) to `held`, confirmed, released later to `route`."""
    body = job if isinstance(job, bytes) else job.SerializeToString()
    headers = held_headers(queue_id=queue_id, job_id=job_id, decision_id=decision_id)
    await publisher.publish_raw(HELD, body, message_id=job_id, message_type=JOB_TYPE, headers=headers)


def released_job(body: bytes, released_at: datetime) -> bytes:
    """A held DeliveryJob's body as released at `released_at` (DeliveryJob.released_at: the holds issued before it
    no longer apply to the job, even in a service that has not read the RELEASE decision yet)."""
    job = message_pb2.DeliveryJob.FromString(body)
    job.released_at.FromDatetime(released_at)
    return job.SerializeToString()


def release_target(headers: Mapping[str, object] | None) -> str | None:
    """Where a held message goes back to: its `x-kubemta-release-to` queue, else the original queue RabbitMQ
    recorded when it dead-lettered it (`x-death[0].queue`); None when neither is known."""
    headers = headers or {}
    target = headers.get(RELEASE_TO)
    if isinstance(target, bytes):
        target = target.decode("ascii", "replace")
    if isinstance(target, str) and target:
        return target
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        queue = deaths[0].get("queue")
        if isinstance(queue, bytes):
            queue = queue.decode("ascii", "replace")
        if isinstance(queue, str) and queue:
            return queue
    return None
