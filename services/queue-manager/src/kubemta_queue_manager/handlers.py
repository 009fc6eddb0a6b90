"""The queue-manager's consumers: `inbound` (split into jobs), `results` (decide each recipient's fate) and
`dsn` (the batcher), each handler taking its stage's message decoded (kubemta_common.amqp.stages) and, for
`inbound` and `results`, the delivery it came in (a redelivery may be recognised as done: redelivery.py).

Each handler publishes everything its input leads to with publisher confirms and
returns only after all of them were confirmed; returning acknowledges the input. A
`PublishFailed` propagates, so the input is requeued (at-least-once: a partly
published batch may be published again). Lifecycle events (lifecycle.py) are written
after the outputs they describe were confirmed: `signed` and `queued` for an accepted
message, one per disposition for a result (outcomes.py). The queue-manager keeps no
state: it all travels in the messages.

A first-attempt job whose domain has a fresh route answer from the resolver goes straight to `deliver` with
that route (route_shortcut.py); its `routed` event, the one the resolver would have written, is recorded after
the message's `queued`, once the job was confirmed. Every other job goes to `route`.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import may_be_repeated
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.stages import Outgoing
from kubemta_common.errors import PermanentError
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import DecisionView
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.job_events import job_event
from kubemta_common.events.queued_event import queued as queued_event
from kubemta_common.events.routed_event import routed as routed_event
from kubemta_common.events.tracker_client import DuplicateChecks
from kubemta_common.logs import message_context, sanitize
from kubemta_common.route_answers import RouteAnswers
from kubemta_common.route_shortcut import RouteShortcut
from kubemta_common.splitter import iter_jobs
from kubemta_common.timestamps import now_timestamp
from kubemta_mail_auth.dkim.trust import may_sign
from kubemta_queue_manager import lifecycle, metrics
from kubemta_queue_manager.dkim_signer import DkimSigner, Outcome
from kubemta_queue_manager.dsn_batcher import DsnBatcher
from kubemta_queue_manager.outcomes import Results
from kubemta_queue_manager.redelivery import RedeliveryGuard
from kubemta_queue_manager.settings import QueueManagerSettings
from kubemta_queue_manager.suppression_sink import SuppressionSink

logger = logging.getLogger(__name__)

PUBLISH_BATCH_BYTES = 16 * 1024 * 1024
"""Job bytes published (and held) at once when one message becomes many jobs."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class QueueManager:
    """The handlers of the `inbound`, `results` and `dsn` stages."""

    def __init__(
        self,
        settings: QueueManagerSettings,
        publisher: HeldPublisher,
        *,
        events: EventSink,
        clock: Callable[[], datetime] = utc_now,
        signer: DkimSigner | None = None,
        tracker: DuplicateChecks | None = None,
        decisions: DecisionView | None = None,
        decisions_ready: asyncio.Event | None = None,
        suppression: SuppressionSink | None = None,
        route_answers: RouteAnswers | None = None,
    ) -> None:
        self._hostname = settings.hostname
        self._publisher = publisher
        self._events = events
        self._signer = signer
        self._guard = RedeliveryGuard(tracker, events, stage=lifecycle.SERVICE)
        verdicts = JobVerdicts(decisions, decisions_ready)
        self._shortcut = (
            RouteShortcut(route_answers, verdicts, decisions_ready=decisions_ready)
            if route_answers is not None and settings.route_shortcut
            else None
        )
        self._results = Results(
            settings, publisher, events, verdicts, clock=clock, hostname=settings.hostname, suppression=suppression
        )
        self._batcher = DsnBatcher(
            publisher,
            settings.hostname,
            window=settings.dsn_batch_window,
            max_held=settings.dsn_batch_limit,
            clock=clock,
            events=events,
        )

    @property
    def batcher(self) -> DsnBatcher:
        """The `dsn` stage's batcher (its groups are flushed at shutdown)."""
        return self._batcher

    async def handle_dsn_request(self, request: message_pb2.DsnRequest) -> None:
        """Hand a DsnRequest to the batcher (dsn_batcher.py); returns once the DSN it is part of was confirmed."""
        if not request.queue_id or not request.sender or not request.recipients:
            raise PermanentError("DSN request without its message, sender or recipients")
        with message_context(request.queue_id, request.job_id):
            await self._batcher.add(request)

    async def handle_accepted(
        self, accepted: message_pb2.AcceptedMessage, delivery: AbstractIncomingMessage | None = None
    ) -> None:
        """DKIM-sign an AcceptedMessage once, split it into one job per domain and queue them all to `route`
        (nothing again when `delivery` is a redelivery of a message whose jobs were recorded as queued)."""
        with message_context(accepted.queue_id):
            event = lifecycle.message_event(accepted.queue_id, accepted.message_id)
            if await self._guard.already_done(delivery, event, "queued"):
                return
            await self._accept(accepted, repeated=may_be_repeated(delivery, False))

    async def _accept(self, accepted: message_pb2.AcceptedMessage, *, repeated: bool = False) -> None:
        """`repeated`: this is a redelivery the tracker did not know as queued (jobs may be out already): the
        jobs are flagged maybe_duplicate, so the resolver checks before routing them."""
        signatures: list[str] = []
        if self._signer is not None and accepted.recipients:
            if may_sign(accepted):
                accepted.content, signatures = await self._sign(self._signer, accepted.content)
            else:
                metrics.DKIM_SIGNATURES.labels(algorithm="none", result="untrusted").inc()
                logger.debug("not DKIM signed: submitted by an untrusted client")
        started = now_timestamp()  # the events' time: the resolver may record `routed` before our confirms return
        routed: list[events_pb2.LifecycleEvent] = []
        jobs = await self._publish_jobs(accepted, repeated=repeated, routed=routed)
        if signatures:
            signed = lifecycle.signed(accepted, signatures)
            signed.time.CopyFrom(started)
            self._events.emit(signed)
        queued = queued_event(accepted, jobs)
        queued.time.CopyFrom(started)
        await self._events.record(queued)  # False (stream down): the mail goes on
        for event in routed:  # jobs sent straight to `deliver`, confirmed
            self._events.emit(event)
        if not jobs:
            logger.warning("message has no recipients; nothing to deliver")
            return
        if logger.isEnabledFor(logging.DEBUG):  # sanitize only for a line that is written
            logger.debug(
                "from=<%s> nrcpt=%d size=%d jobs=%d%s",
                sanitize(accepted.sender),
                len(accepted.recipients),
                len(accepted.content),
                len(jobs),
                " (generated DSN)" if accepted.generated else "",
            )
        metrics.MESSAGES_SPLIT.inc()
        metrics.JOBS_CREATED.inc(len(jobs))

    async def _publish_jobs(
        self,
        accepted: message_pb2.AcceptedMessage,
        *,
        repeated: bool = False,
        routed: list[events_pb2.LifecycleEvent] | None = None,
    ) -> list[events_pb2.QueuedJob]:
        """Publish one job per domain to `route` (or `deliver`: route_shortcut.py, its `routed` event appended to
        `routed`), a batch of at most PUBLISH_BATCH_BYTES at a time; the jobs.

        Each job carries the whole content, so a 10 MB message to 50 domains would hold 500 MB if its jobs were
        made (and serialised) all at once: they are made one by one, and each batch is released once confirmed.
        Small messages still go in one batch, all confirms awaited together.
        """
        batch: list[Outgoing] = []
        queued: list[events_pb2.QueuedJob] = []
        size = published = 0
        for job in iter_jobs(accepted, self._hostname):
            job.maybe_duplicate = repeated
            if self._shortcut is not None and await self._shortcut.attach(job):
                outgoing = stages.DELIVER.outgoing(job, message_id=job.job_id)
                if routed is not None:
                    event = routed_event(job, job.route)
                    event.time.CopyFrom(now_timestamp())  # before the publish: the worker may record its attempt
                    routed.append(event)
            else:
                outgoing = stages.ROUTE.outgoing(job, message_id=job.job_id)
            batch.append(outgoing)
            queued.append(events_pb2.QueuedJob(job_id=job.job_id, domain=job.domain, recipients=job.recipients))
            size += len(outgoing.body)
            del job, outgoing
            if size >= PUBLISH_BATCH_BYTES:
                await self._publish_batch(batch, queued[published:])
                published, batch, size = len(queued), [], 0
        if batch:
            await self._publish_batch(batch, queued[published:])
        return queued

    async def _publish_batch(self, batch: list[Outgoing], queued: list[events_pb2.QueuedJob]) -> None:
        await self._publisher.publish_all(batch)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        for job, outgoing in zip(queued, batch, strict=True):
            logger.debug(
                "job %s: domain=%s nrcpt=%d queued to %s",
                job.job_id,
                sanitize(job.domain),
                len(job.recipients),
                outgoing.stage.queue,
                extra={"job_id": job.job_id},
            )

    async def _sign(self, signer: DkimSigner, content: bytes) -> tuple[bytes, list[str]]:
        """`content` DKIM-signed once for all its jobs, and its signatures ("d=... s=... a=..."); unsigned (and
        logged) when signing fails, never lost."""
        try:
            result = await asyncio.to_thread(signer.sign, content)
        except Exception:
            logger.exception("DKIM signing failed; sending the message unsigned")
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result="error").inc()
            return content, []
        signatures: list[str] = []
        for key in result.signed:
            metrics.DKIM_SIGNATURES.labels(algorithm=key.algorithm.value, result="signed").inc()
            signatures.append(f"d={key.domain} s={key.selector} a={key.algorithm.value}")
            logger.debug("DKIM signed: %s", signatures[-1])
        for key in result.failed:
            metrics.DKIM_SIGNATURES.labels(algorithm=key.algorithm.value, result="error").inc()
        if result.outcome is Outcome.NO_FROM:
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result=result.outcome.value).inc()
            logger.debug("not DKIM signed: no single From: mailbox")
        elif result.outcome is Outcome.NO_KEY:
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result=result.outcome.value).inc()
            logger.debug("not DKIM signed: no key for %s", sanitize(result.domain or ""))
        return result.content, signatures

    async def handle_result(
        self, result: message_pb2.DeliveryResult, delivery: AbstractIncomingMessage | None = None
    ) -> None:
        """Decide each recipient's fate and publish the retry job and DSNs it calls for (nothing again when
        `delivery` is a redelivery of a result whose fate was recorded)."""
        job = result.job
        if not result.HasField("job") or not job.queue_id:
            raise PermanentError("delivery result without its job")
        with message_context(job.queue_id, job.job_id):
            if await self._guard.already_done(delivery, job_event(job), "fate", attempt=job.attempts):
                return
            await self._results.handle(result, repeated=may_be_repeated(delivery, False))
