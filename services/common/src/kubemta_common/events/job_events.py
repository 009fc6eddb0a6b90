"""Lifecycle events (events.proto) about one job that several services write: the event naming the job, what an
operator's decision or a redelivery made of it (held, deleted, duplicate), and its `delivered` fate (written by the
queue-manager after a result, or by the delivery worker for a job that ends there: every recipient delivered and no
success DSN owed). Pure functions; the services write them after the publishes they describe were confirmed."""

import re
from collections.abc import Iterable

from kubemta.v1 import events_pb2, message_pb2

REDELIVERED_INPUT = "redelivered-input"
"""The reason of a `duplicate` event for a bus message that was already handled before a crash."""
ADMIN = "admin"
"""The reason of a `held` event for an operator's HOLD."""
DELIVERED_STATUS = "2.0.0"
"""The status a delivered recipient is reported with when its result has none (or a malformed one)."""
_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
"""RFC 3463 §2: class.subject.detail."""


def job_event(job: message_pb2.DeliveryJob) -> events_pb2.LifecycleEvent:
    """An event about one job, at its current attempt (its queue id, Message-ID, job id and attempts), naming its
    submitter and tags (for webhooks)."""
    event = events_pb2.LifecycleEvent(
        queue_id=job.queue_id,
        message_id=job.message_id,
        job_id=job.job_id,
        attempt=job.attempts,
        submitter=job.submitter,
    )
    if job.tags:  # an empty list passed to the constructor costs about as much as the rest
        event.tags.extend(job.tags)
    return event


def held(
    job: message_pb2.DeliveryJob,
    decision: events_pb2.AdminDecision | None = None,
    *,
    release_to: str,
    reason: str = ADMIN,
) -> events_pb2.LifecycleEvent:
    """`job` was put on the `held` queue for `reason` (an operator's `decision`, poison, malformed); a release
    sends it to `release_to`."""
    event = job_event(job)
    event.held.reason = reason
    event.held.release_to = release_to
    if decision is not None:
        event.held.decision_id = decision.decision_id
        event.held.actor = decision.actor
    return event


def deleted(
    job: message_pb2.DeliveryJob,
    decision: events_pb2.AdminDecision | None,
    recipients: Iterable[str],
    *,
    dsn: bool,
    stage: str,
) -> events_pb2.LifecycleEvent:
    """An operator's `decision` deleted `recipients` of `job` at `stage` (the service), with or without a DSN."""
    event = job_event(job)
    event.deleted.stage = stage
    event.deleted.dsn_requested = dsn
    event.deleted.recipients.extend(recipients)
    if decision is not None:
        event.deleted.decision_id = decision.decision_id
        event.deleted.actor = decision.actor
    return event


def duplicate(
    event: events_pb2.LifecycleEvent, *, reason: str = REDELIVERED_INPUT, recipients: Iterable[str] = ()
) -> events_pb2.LifecycleEvent:
    """`event` (its ids set) turned into a `duplicate`: work not done again for `reason` (`recipients`: those
    not sent to again)."""
    event.duplicate.reason = reason
    event.duplicate.first_queue_id = event.queue_id
    event.duplicate.recipients.extend(recipients)
    return event


def delivered(
    job: message_pb2.DeliveryJob, results: Iterable[message_pb2.RecipientResult], *, provider: str
) -> events_pb2.LifecycleEvent:
    """The `delivered` fate of `job` (one RecipientsFate: its domain, the route's `provider` label, and every
    delivered recipient's outcome with its handoff, the status RFC 3463-shaped: DELIVERED_STATUS when missing)."""
    event = job_event(job)
    fate = event.delivered
    fate.domain = job.domain
    fate.provider = provider
    for result in results:
        fate.recipients.add(
            recipient=result.recipient,
            outcome=result.outcome,
            smtp_code=result.smtp_code,
            status=result.status if _STATUS_RE.match(result.status) else DELIVERED_STATUS,
            diagnostic=result.diagnostic,
            remote_mta=result.remote_mta,
            handoff=result.handoff,
        )
    return event
