"""The consumer of `deliver`: deliver the job, then either end it here or publish its DeliveryResult to
`results`, then return (the consumer acknowledges the job only after that).

A job whose every recipient was delivered (now, or recorded as delivered before: the redelivery guard below)
and that owes no success DSN (NOTIFY=SUCCESS without HANDOFF_DSN_PASSED) ends here: nothing is published; the
`attempted` and `delivered` events are recorded (a bounded wait for the stream's confirm), the delivered
recipients counted (`kubemta_recipients_delivered_total`, `kubemta_queue_time_seconds`) and logged as the
queue-manager did (finished.py, which also says what happens at each crash point). Every other job (a recipient
deferred, bounced or unanswered, a success DSN owed, an operator's DELETE with a DSN) publishes its result: the
job travels back unchanged inside it (the queue-manager keeps no state and counts the attempts itself). A failed
publish raises PublishFailed, so the job is not acknowledged and is delivered again (at least once: the
recipient may get a duplicate).

Held jobs, rejected to `held` with an error line and `kubemta_jobs_held_total{reason}`
so they neither block `deliver` nor disappear:
- malformed: a job that fails the checks of job_checks.py (no domain, no recipients, no
  route hosts, a port above 65535) is held on its first delivery, without delivering.
- poison: RabbitMQ counts how often a message went back to a quorum queue
  (`x-delivery-count`: handler crashes, failed publishes, a worker gone mid-job). A job
  already returned `delivery_limit` times is not tried again. (A crash that kills the
  process is caught by the queue's own `x-delivery-limit`, which dead-letters to `held` too.)

Lifecycle events (kubemta_common.events): an `attempted` event is recorded (a bounded wait for
the stream's confirm) right after the transaction's final replies and before the result is
published, so a job delivered again after a crash knows who already has the mail; held jobs
emit `held`.

Redelivery guard: a job the broker delivers again (redelivered, or returned to the queue
before) is first checked with the tracker (`delivered_recipients`): recipients recorded as
delivered are not sent to again (a `duplicate` event, `kubemta_duplicates_total{stage=
"delivery-worker"}`); their recorded outcomes count as delivered (in the result, or in the
`delivered` event of a job that ends here). When every recipient was delivered, nothing is sent:
the job ends here (its `delivered` event recorded and counted, unless the tracker says this
attempt's fate is recorded already) or, when a success DSN is owed, its result is published.
A tracker that does not know (None) changes nothing. Their
handoff (who sends the success DSN) is the journal's; the tracker records none, so theirs is
assumed from the route (handoff.py: final over LMTP, else relayed).

Admin decisions (a `Decisions` view kept up to date by a DecisionFollower) are honoured before
delivering: DELETE publishes nothing but, when the operator asked for a DSN, a result with
every recipient failed permanently (5.3.0 "deleted by the administrator"), and emits
`deleted`; HOLD publishes the job to `held` (amqp/held.py headers, released to `route`) and
emits `held`. Either way the job is acknowledged.

Drain: a delivery cancelled by the drain deadline publishes nothing (its job is
re-delivered). Once a delivery is done, its result is reported even if the
cancellation comes during the publish: the publish completes and the job is
acknowledged here, since delivering it again would duplicate the mail.
"""

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import may_be_repeated, return_if_unanswered, returned_count
from kubemta_common.amqp.held import hold_job
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.topology import DELIVERY_LIMIT, ROUTE
from kubemta_common.bus_messages import Encoded, encoded_with_field
from kubemta_common.errors import PermanentError
from kubemta_common.events import job_events
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import Action, DecisionView
from kubemta_common.events.deletion import deleted_result
from kubemta_common.events.emitter import EventSink, NoEvents
from kubemta_common.events.job_events import job_event
from kubemta_common.logs import message_context, sanitize
from kubemta_common.message_headers import header_block
from kubemta_common.metrics import DUPLICATES
from kubemta_common.timestamps import now_timestamp
from kubemta_delivery_worker.deliverer import AttemptReport, Deliverer
from kubemta_delivery_worker.finished import JobRecords, ends_here, fate_recorded, finish, reports_success
from kubemta_delivery_worker.handoff import assumed_handoff
from kubemta_delivery_worker.job_checks import malformation
from kubemta_delivery_worker.journal import DeliveryJournal
from kubemta_delivery_worker.metrics import JOBS_HELD
from kubemta_delivery_worker.replies import outcome_name

logger = logging.getLogger(__name__)

REPORTER = "delivery-worker"
STAGE = "delivery-worker"
REDELIVERED_JOB = "redelivered-job"
"""The reason of the `duplicate` event for recipients of a redelivered job that were delivered before."""


class DeliverHandler:
    """Handles one `deliver` message: the job, decoded by the stage, and the delivery it came in."""

    def __init__(
        self,
        deliverer: Deliverer,
        publisher: HeldPublisher,
        *,
        delivery_limit: int = DELIVERY_LIMIT,
        events: EventSink | None = None,
        tracker: JobRecords | None = None,
        decisions: DecisionView | None = None,
        decisions_ready: asyncio.Event | None = None,
        journal: DeliveryJournal | None = None,
    ) -> None:
        self._deliverer = deliverer
        self._journal = journal  # None: no local journal (KUBEMTA_DELIVERY_JOURNAL empty)
        self._publisher = publisher
        self._delivery_limit = delivery_limit
        self._events: EventSink = events if events is not None else NoEvents()
        self._tracker = tracker  # None: no redelivery guard (KUBEMTA_TRACKER_URL empty)
        # No decisions: none are honoured; the first verdict waits (bounded) for the rules issued before the start.
        self._verdicts = JobVerdicts(decisions, decisions_ready)

    async def __call__(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage) -> None:
        with message_context(sanitize(job.queue_id), sanitize(job.job_id)):  # sanitized: a malformed job's too
            self._hold_if_malformed(job, message)
            self._hold_if_poison(job, message)
            await self.process(job, message)

    def _hold_if_malformed(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage) -> None:
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
        self._events.emit(
            job_events.held(job, reason="malformed", release_to=message.routing_key or stages.DELIVER.queue)
        )
        # No "malformed" here: the consumer logs this text too, and the line above is the one to find.
        raise PermanentError(f"job {sanitize(job.job_id)} not delivered: {reason}")

    def _hold_if_poison(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage) -> None:
        """Raise PermanentError (the consumer rejects the job to `held`) once it came back too often."""
        returned = returned_count(message)
        if returned < self._delivery_limit:
            return
        JOBS_HELD.labels(reason="poison").inc()
        logger.error(
            "job returned to the queue %d times without a result (limit %d): moving it to held",
            returned,
            self._delivery_limit,
            extra={"domain": job.domain, "delivery_count": returned},
        )
        self._events.emit(job_events.held(job, reason="poison", release_to=message.routing_key or stages.DELIVER.queue))
        raise PermanentError(f"job {job.job_id} returned {returned} times; held as poison")

    async def process(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage | None = None) -> None:
        """Deliver `job` and publish its result (`message` is the delivery it came in, acknowledged by the caller)."""
        if await self._decided(job, message):
            return
        done = await self._delivered_before(job, message)
        remaining = [rcpt for rcpt in dict.fromkeys(job.recipients) if rcpt not in done]
        attempted_at = now_timestamp()
        report: AttemptReport | None = None
        if remaining:
            to_deliver = job
            if done:
                to_deliver = message_pb2.DeliveryJob()
                to_deliver.CopyFrom(job)
                to_deliver.ClearField("recipients")
                to_deliver.recipients.extend(remaining)
            report = await self._deliverer.attempt(to_deliver)  # cancelled here: nothing published
            if self._journal is not None:  # in the loop iteration that read the reply: before any other await
                self._journal.record(job.job_id, report.results)
        answered = {result.recipient: result for result in report.results} if report is not None else {}
        answered.update(done)
        recipients = [answered[rcpt] for rcpt in dict.fromkeys(job.recipients) if rcpt in answered]
        final = ends_here(job, recipients)
        if final and report is None and await fate_recorded(self._tracker, job):
            logger.info("job already recorded as delivered before the redelivery; acknowledging it")
            return
        if final:
            reported = asyncio.ensure_future(
                finish(self._events, job, recipients, attempted_event(job, report) if report is not None else None)
            )
        else:
            body = result_body(job, recipients, attempted_at, message.body if message is not None else None)
            reported = asyncio.ensure_future(self._report(job, report, body))
            del body
        try:
            await asyncio.shield(reported)
        except asyncio.CancelledError:
            # The mail went out: report it rather than leave the job to be delivered twice.
            await reported
            if message is not None:
                await message.ack()
            logger.info("job finished or result published during the drain; job acknowledged")
            raise
        outcomes = [outcome_name(r.outcome) for r in recipients]
        logger.debug(
            "delivery attempt finished: %d delivered, %d deferred, %d bounced; %s",
            outcomes.count("delivered"),
            outcomes.count("deferred"),
            outcomes.count("bounced"),
            "job finished here (no result)" if final else "result published",
            extra={"domain": job.domain},
        )

    async def _report(
        self,
        job: message_pb2.DeliveryJob,
        report: AttemptReport | None,
        body: Encoded[message_pb2.DeliveryResult],
    ) -> None:
        """Record the `attempted` event (when a transaction was attempted), then publish the result."""
        if report is not None:
            await self._events.record(attempted_event(job, report))  # False: the stream lags; the result goes on
        await self._publisher.publish(stages.RESULTS, body, message_id=job.job_id)

    async def _delivered_before(
        self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage | None
    ) -> dict[str, message_pb2.RecipientResult]:
        """On a redelivery (or a job flagged as a possible second copy: DeliveryJob.maybe_duplicate): the job's
        recipients this pod's journal or the tracker recorded as delivered, as results to report again."""
        if not may_be_repeated(message, job.maybe_duplicate):
            return {}
        wanted = set(job.recipients)
        done = self._journal.delivered(job.job_id) if self._journal is not None else {}
        if self._tracker is not None and not wanted <= set(done):
            outcomes = await self._tracker.delivered_recipients(job.job_id)
            if outcomes is None and message is not None:
                return_if_unanswered(message, "delivered")  # raises while it may ask again later
            for outcome in outcomes or ():
                if outcome.outcome == message_pb2.OUTCOME_DELIVERED:
                    done.setdefault(
                        outcome.recipient,
                        message_pb2.RecipientResult(
                            recipient=outcome.recipient,
                            outcome=message_pb2.OUTCOME_DELIVERED,
                            smtp_code=outcome.smtp_code,
                            status=outcome.status,
                            diagnostic=outcome.diagnostic,
                            remote_mta=outcome.remote_mta,
                            handoff=outcome.handoff,
                        ),
                    )
        done = {rcpt: result for rcpt, result in done.items() if rcpt in wanted}
        for result in done.values():
            if result.handoff == message_pb2.HANDOFF_UNSPECIFIED:
                result.handoff = assumed_handoff(job.route.kind)
        if done:
            DUPLICATES.labels(stage=STAGE).inc()
            self._events.emit(job_events.duplicate(job_event(job), reason=REDELIVERED_JOB, recipients=done))
        return done

    async def _decided(self, job: message_pb2.DeliveryJob, message: AbstractIncomingMessage | None) -> bool:
        """Honour an operator's DELETE or HOLD of this job; True when one applied (nothing is delivered)."""
        verdict = await self._verdicts.verdict(job)
        decision = verdict.decision or events_pb2.AdminDecision()
        if verdict.action is Action.DELETE:
            if verdict.dsn:
                results = [deleted_result(rcpt) for rcpt in dict.fromkeys(job.recipients)]
                body = result_body(job, results, now_timestamp(), message.body if message is not None else None)
                await self._publisher.publish(stages.RESULTS, body, message_id=job.job_id)
            recipients = dict.fromkeys(job.recipients)
            self._events.emit(job_events.deleted(job, verdict.decision, recipients, dsn=verdict.dsn, stage=STAGE))
            return True
        if verdict.action is Action.HOLD:
            as_received = message.body if message is not None else job  # the job as it came, not encoded again
            await hold_job(
                self._publisher, as_received, queue_id=job.queue_id, job_id=job.job_id, decision_id=decision.decision_id
            )
            self._events.emit(job_events.held(job, verdict.decision, release_to=ROUTE))
            return True
        return False


def attempted_event(job: message_pb2.DeliveryJob, report: AttemptReport) -> events_pb2.LifecycleEvent:
    """The `attempted` event of one delivery attempt: the host that answered last, its TLS, every recipient's
    outcome, the duration."""
    event = job_event(job)
    attempted = event.attempted
    attempted.domain = job.domain
    if report.host is not None:
        attempted.host = report.host.hostname
        attempted.address = report.host.unix_socket or report.host.address
        attempted.port = 0 if report.host.unix_socket else report.port
    attempted.tls_version = report.tls_version
    attempted.tls_cipher = report.tls_cipher
    attempted.duration = report.duration
    for result in report.results:
        attempted.recipients.add(
            recipient=result.recipient,
            outcome=result.outcome,
            smtp_code=result.smtp_code,
            status=result.status,
            diagnostic=result.diagnostic,
            remote_mta=result.remote_mta,
            handoff=result.handoff,
        )
    return event


def result_body(
    job: message_pb2.DeliveryJob,
    recipients: list[message_pb2.RecipientResult],
    attempted_at: Timestamp,
    received: bytes | None,
) -> Encoded[message_pb2.DeliveryResult]:
    """The serialised DeliveryResult for `job`: the job travels back unchanged, its content too unless every
    recipient was delivered (nothing is left to send or bounce, so the content's trip ends here, and it is
    cleared from `job` itself; only its header block goes back when a success DSN will return it: a recipient
    asked NOTIFY=SUCCESS and kubemta, not the next hop, reports).

    The job as it came (`received`, the delivery's body) is put into the result as it is: a protobuf
    message field is its own serialisation after a tag and a length (protobuf encoding, "Embedded
    messages"), so a 10 MB job is not decoded, copied into the result and encoded again.
    """
    head = message_pb2.DeliveryResult(recipients=recipients, attempted_at=attempted_at, reporter=REPORTER)
    if all(r.outcome == message_pb2.OUTCOME_DELIVERED for r in recipients):
        if any(reports_success(job, result) for result in recipients):
            job.content = header_block(job.content, SUCCESS_HEADERS_LIMIT)
        else:
            job.ClearField("content")  # done with it: the job is not sent again
        job_bytes = job.SerializeToString()
    else:
        job_bytes = received if received is not None else job.SerializeToString()
    return encoded_with_field(head, message_pb2.DeliveryResult.JOB_FIELD_NUMBER, [job_bytes])


SUCCESS_HEADERS_LIMIT = 64 * 1024
"""Most octets of the header block a fully delivered job takes back for a success DSN (the queue-manager cuts what
it returns further)."""
