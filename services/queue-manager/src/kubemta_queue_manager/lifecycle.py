"""The queue-manager's lifecycle events (events.proto), built from what its handlers did. Pure functions.

Every event names its message (queue id, Message-ID) and, for a job, the job id and the attempts
already made (DeliveryJob.attempts). The handlers emit or record them only after the bus
messages they describe were confirmed (handlers.py, dsn_batcher.py). The events about a job that the other
services write too (held, deleted, duplicate, and `delivered`: the delivery worker writes it for a job that ends
there) are kubemta_common.events.job_events.
"""

from collections.abc import Sequence
from datetime import datetime

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events import job_events
from kubemta_common.events.job_events import job_event
from kubemta_queue_manager.dsn_requests import header_block
from kubemta_queue_manager.fate import Decision, Disposition, RecipientFate

SERVICE = "queue-manager"
RECEIVED_HEADERS = 16 * 1024
"""Bytes of a generated DSN's header block its `received` event carries (events.proto: at most 16 KiB)."""


def message_event(queue_id: str, message_id: str) -> events_pb2.LifecycleEvent:
    """An event about a whole message (no job)."""
    return events_pb2.LifecycleEvent(queue_id=queue_id, message_id=message_id)


def signed(accepted: message_pb2.AcceptedMessage, signatures: Sequence[str]) -> events_pb2.LifecycleEvent:
    """The message was DKIM-signed: one "d=... s=... a=..." per signature."""
    event = message_event(accepted.queue_id, accepted.message_id)
    event.signed.signatures.extend(signatures)
    return event


def outcome(fate: RecipientFate) -> events_pb2.RecipientOutcome:
    """One recipient's result as the event reports it (status 4.4.7 for an expired one; a failure's class)."""
    entry = fate.result
    found = fate.classification
    return events_pb2.RecipientOutcome(
        recipient=entry.recipient,
        outcome=entry.outcome,
        smtp_code=entry.smtp_code,
        status=fate.status,
        diagnostic=entry.diagnostic,
        remote_mta=entry.remote_mta,
        bounce_class=found.bounce_class.value if found is not None else "",
        hard=found.hard if found is not None else False,
    )


FATE_KINDS: tuple[tuple[Disposition, str], ...] = (
    (Disposition.DELIVERED, "delivered"),
    (Disposition.DEFERRED, "deferred"),
    (Disposition.BOUNCED, "bounced"),
    (Disposition.EXPIRED, "expired"),
)
"""The dispositions that have an event of their own, in the order their events are written."""


def fates(
    job: message_pb2.DeliveryJob,
    decision: Decision,
    *,
    provider: str,
    retry_queue: str = "",
    next_attempt: datetime | None = None,
) -> list[events_pb2.LifecycleEvent]:
    """One event per disposition the decision holds (delivered, deferred, bounced, expired), each listing its
    recipients; a deferred one names the queue the job waits in (`retry_queue`, "held" when an operator holds it)
    and when it comes back."""
    dsn_requested = {id(fate) for fate in decision.bounce}
    events: list[events_pb2.LifecycleEvent] = []
    for disposition, kind in FATE_KINDS:
        group = [fate for fate in decision.recipients if fate.disposition is disposition]
        if not group:
            continue
        if disposition is Disposition.DELIVERED:  # the same event as the worker's for a job that ends there
            events.append(job_events.delivered(job, (fate.result for fate in group), provider=provider))
            continue
        event = job_event(job)
        body: events_pb2.RecipientsFate = getattr(event, kind)
        body.domain = job.domain
        body.provider = provider
        body.recipients.extend(outcome(fate) for fate in group)
        if disposition is Disposition.DEFERRED:
            body.retry_queue = retry_queue
            if next_attempt is not None:
                body.next_attempt.FromDatetime(next_attempt)
        else:
            body.dsn_requested = any(id(fate) in dsn_requested for fate in group)
        events.append(event)
    return events


def dsn_received(dsn: message_pb2.AcceptedMessage) -> events_pb2.LifecycleEvent:
    """kubemta queued a DSN of its own (a new message, from <>)."""
    event = message_event(dsn.queue_id, dsn.message_id)
    received = event.received
    received.sender = dsn.sender
    received.recipients.extend(dsn.recipients)
    received.size = len(dsn.content)
    received.client_helo = dsn.client_helo
    received.trust = dsn.trust
    received.arrival_time.CopyFrom(dsn.arrival_time)
    received.headers = header_block(dsn.content, RECEIVED_HEADERS)
    received.generated = True
    return event


def dsn_sent(
    *,
    queue_id: str,
    message_id: str,
    dsn: message_pb2.AcceptedMessage,
    action: "message_pb2.DsnAction.ValueType",
    recipients: Sequence[str],
) -> events_pb2.LifecycleEvent:
    """The original message's sender was sent a DSN: `dsn_sent` (failure, or success: delivered/relayed) or
    `delay_warning_sent` (delay)."""
    event = message_event(queue_id, message_id)
    body = event.delay_warning_sent if action == message_pb2.DSN_ACTION_DELAYED else event.dsn_sent
    body.dsn_queue_id = dsn.queue_id
    body.to = dsn.recipients[0] if dsn.recipients else ""
    body.recipients.extend(recipients)
    body.action = action
    return event
