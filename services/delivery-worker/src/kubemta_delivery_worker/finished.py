"""A job that ends at the delivery worker: every recipient delivered and no success DSN owed.

Such a job needs no decision from the queue-manager (fate.py would find every recipient delivered, nothing to
retry, bounce or report), so its DeliveryResult is not published to `results`. The worker writes what the
queue-manager would have: the `delivered` fate event (kubemta_common.events.job_events.delivered, awaited with the
`attempted` event, as the queue-manager records its fate events after its outputs), the count
`kubemta_recipients_delivered_total{provider}` and `kubemta_queue_time_seconds` (metrics.py: the queue-manager's
names, labels and buckets) and its log line per recipient (outcomes.py: `to=<...> relay=... delay=... status=
delivered`). Then the handler returns and the job is acknowledged.

A success DSN is owed for a delivered recipient whose sender asked for one (RFC 3461 NOTIFY=SUCCESS:
kubemta_common.dsn_parameters.wants / recipient_dsn) unless the next hop took the DSN parameters over
(HANDOFF_DSN_PASSED) or the sender is `<>` / the message is kubemta's own DSN (fate.never_bounced): such a job,
and any job with a recipient deferred, bounced or unanswered, goes to `results` as before.

Crash points (the worker killed, or its channel lost, between the remote server's reply and the job's ack):
- before the `attempted` / `delivered` events were confirmed: the job comes back (redelivered); the journal (same
  pod) or, failing that, nothing knows it was sent: it is sent again (at least once, as before);
- after `attempted` (or the journal line), before `delivered`: the redelivery guard finds every recipient
  delivered, sends nothing, and the worker records `delivered` and counts them (the first process did not);
- after `delivered`, before the ack: the guard finds every recipient delivered and the tracker answers that the
  job's fate at this attempt is recorded (`recorded("fate")`): nothing is recorded or counted again (a
  `duplicate` event only). When the tracker cannot answer (or none is configured), `delivered` is recorded and
  counted a second time: at least once, never lost.
"""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common import dsn_parameters
from kubemta_common.events import job_events
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.tracker_client import DeliveredRecipients, DuplicateChecks
from kubemta_common.logs import sanitize
from kubemta_common.providers import provider_label
from kubemta_common.timestamps import age_seconds
from kubemta_delivery_worker.metrics import QUEUE_TIME, RECIPIENTS_DELIVERED

logger = logging.getLogger(__name__)


class JobRecords(DeliveredRecipients, DuplicateChecks, Protocol):
    """What the worker asks the tracker: the recipients recorded as delivered, and whether a fate was recorded."""


def reports_success(job: message_pb2.DeliveryJob, result: message_pb2.RecipientResult) -> bool:
    """Whether kubemta sends `result`'s recipient a success DSN (its sender asked, no next hop took it over)."""
    if result.handoff == message_pb2.HANDOFF_DSN_PASSED or not job.sender or job.generated:
        return False  # the next hop reports; <> and DSNs never get one
    return dsn_parameters.wants(dsn_parameters.recipient_dsn(job, result.recipient), "success")


def ends_here(job: message_pb2.DeliveryJob, recipients: Sequence[message_pb2.RecipientResult]) -> bool:
    """True when every recipient of `job` has a result, every result is delivered, and none owes a success DSN."""
    answered = {result.recipient for result in recipients}
    return (
        all(recipient in answered for recipient in job.recipients)
        and all(result.outcome == message_pb2.OUTCOME_DELIVERED for result in recipients)
        and not any(reports_success(job, result) for result in recipients)
    )


async def fate_recorded(tracker: DuplicateChecks | None, job: message_pb2.DeliveryJob) -> bool:
    """Whether the tracker knows the fate of `job` at its attempt as recorded (False when unknown or no tracker)."""
    if tracker is None:
        return False
    return await tracker.recorded("fate", job_id=job.job_id, attempt=job.attempts) is True


async def finish(
    events: EventSink,
    job: message_pb2.DeliveryJob,
    recipients: Sequence[message_pb2.RecipientResult],
    attempted: events_pb2.LifecycleEvent | None,
    *,
    now: datetime | None = None,
) -> None:
    """Record the `attempted` event (when a transaction was attempted) and the job's `delivered` fate together
    (one stream batch, one confirm awaited; False: the stream lags, the job still ends), then count and log it."""
    now = now or datetime.now(UTC)
    provider = provider_label(job.route.provider)
    delivered = job_events.delivered(job, recipients, provider=provider)
    # In this order into the buffer, one confirm awaited for both: `attempted` runs eagerly up to its wait, then
    # `delivered` is recorded inline (one task where asyncio.gather made two and a future).
    first = None
    if attempted is not None:
        first = asyncio.Task(events.record(attempted), loop=asyncio.get_running_loop(), eager_start=True)
    await events.record(delivered)
    if first is not None:
        await first
    age = age_seconds(job.arrival_time, now)
    for result in delivered.delivered.recipients:
        RECIPIENTS_DELIVERED.labels(provider=provider).inc()
        QUEUE_TIME.observe(age)
        logger.debug(  # the queue-manager's line for a delivered recipient (outcomes.py)
            "to=<%s> relay=%s delay=%.0fs attempts=%d dsn=%s status=%s%s (%s)",
            sanitize(result.recipient),
            sanitize(result.remote_mta) or "none",
            age,
            job.attempts + 1,
            result.status,
            "delivered",
            "",
            sanitize(result.diagnostic),
        )
