"""The `route` consumer: attach a route to each DeliveryJob and pass it on.

A routed job goes to `deliver`; a job that cannot be routed becomes a DeliveryResult
(one RecipientResult per recipient, no SMTP code) on `results`, where the
queue-manager retries it (temporary) or bounces it (permanent). The handler returns,
and so lets the consumer acknowledge the job, only after that publish was confirmed;
a failed publish (PublishFailed) propagates and the job returns to `route`.

Before routing (checks.py): a redelivered job whose `routed` event was recorded is acknowledged
without publishing again (a `duplicate` event); a job an operator deleted is dropped (a `deleted`
event, and a permanent failure on `results` when the operator asked for a DSN, which the
queue-manager bounces); a job an operator held goes to `held` (a `held` event). A routed job's
`routed` event is recorded once its `deliver` message was confirmed; a route failure writes no
event (the queue-manager's deferred or bounced says it).
"""

import logging
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import may_be_repeated
from kubemta_common.amqp.held import hold_job
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.topology import ROUTE
from kubemta_common.events import job_events
from kubemta_common.events.decisions import Action, Verdict
from kubemta_common.events.deletion import deletion_result
from kubemta_common.events.emitter import EventSink
from kubemta_common.logs import message_context, sanitize
from kubemta_common.metrics import DUPLICATES
from kubemta_common.timestamps import now_timestamp
from kubemta_dns_resolver import lifecycle
from kubemta_dns_resolver.checks import JobChecks
from kubemta_dns_resolver.metrics import ROUTES
from kubemta_dns_resolver.router import RouteFailure

logger = logging.getLogger(__name__)

REPORTER = "dns-resolver"
LOGGED_HOSTS = 5


class DomainRouter(Protocol):
    """What the handler needs from router.Router."""

    async def route(self, domain: str) -> message_pb2.Route | RouteFailure: ...


class RouteHandler:
    """Consumes `route` (its `handle` is the stage's handler); publishes to `deliver`, `results` or `held`."""

    def __init__(
        self,
        router: DomainRouter,
        publisher: HeldPublisher,
        *,
        events: EventSink,
        checks: JobChecks | None = None,
    ) -> None:
        self._router = router
        self._publisher = publisher
        self._events = events
        self._checks = checks or JobChecks()

    async def handle(self, job: message_pb2.DeliveryJob, delivery: AbstractIncomingMessage | None = None) -> None:
        """Route one job and publish its successor (`delivery`: the delivery it came in, for redeliveries)."""
        with message_context(job.queue_id, job.job_id):
            if await self._checks.already_routed(job, delivery):
                self._events.emit(lifecycle.duplicate(job))
                DUPLICATES.labels(stage=lifecycle.SERVICE).inc()
                return
            verdict = await self._checks.verdict(job)
            if verdict.action is Action.DELETE:
                await self._delete(job, verdict)
            elif verdict.action is Action.HOLD:
                await self._hold(job, verdict)
            else:
                # routed again after a crash (ours or the publisher's): the worker checks before delivering it
                job.maybe_duplicate = may_be_repeated(delivery, job.maybe_duplicate)
                await self._route(job)

    async def _delete(self, job: message_pb2.DeliveryJob, verdict: Verdict) -> None:
        """Drop the job; with a DSN asked for, report its recipients failed to the queue-manager, which bounces."""
        if verdict.dsn:
            await self._publisher.publish(stages.RESULTS, deletion_result(job, REPORTER), message_id=job.job_id)
        self._events.emit(lifecycle.deleted(job, verdict.decision, dsn=verdict.dsn))

    async def _hold(self, job: message_pb2.DeliveryJob, verdict: Verdict) -> None:
        """The job to `held` (confirmed), with the headers a release reads (kubemta_common.amqp.held)."""
        decision_id = verdict.decision.decision_id if verdict.decision is not None else ""
        await hold_job(self._publisher, job, queue_id=job.queue_id, job_id=job.job_id, decision_id=decision_id)
        self._events.emit(job_events.held(job, verdict.decision, release_to=ROUTE))

    async def _route(self, job: message_pb2.DeliveryJob) -> None:
        result = await self._router.route(job.domain)
        log_extra = {"domain": sanitize(job.domain)}
        if isinstance(result, RouteFailure):
            await self._publish_failure(job, result)
            outcome = "temporary" if result.temporary else "permanent"
            ROUTES.labels(source=result.source, result=outcome).inc()
            logger.info(
                "no route for %s (%s): %s %s",
                sanitize(job.domain),
                result.source,
                result.status,
                result.diagnostic,
                extra={**log_extra, "source": result.source, "result": outcome, "status": result.status},
            )
            return
        job.route.CopyFrom(result)
        routed = lifecycle.routed(job, result)
        # its time is before the publish: the worker may record its attempt before our confirm returns
        routed.time.CopyFrom(now_timestamp())
        await self._publisher.publish(stages.DELIVER, job, message_id=job.job_id)
        ROUTES.labels(source=result.source, result="ok").inc()
        await self._events.record(routed)  # False (stream down): the job goes on
        logger.debug(
            "routed %s via %s: %s",
            sanitize(job.domain),
            result.source,
            _describe_hosts(result),
            extra={**log_extra, "source": result.source, "result": "ok", "provider": result.provider},
        )

    async def _publish_failure(self, job: message_pb2.DeliveryJob, failure: RouteFailure) -> None:
        outcome = message_pb2.OUTCOME_TEMPORARY if failure.temporary else message_pb2.OUTCOME_PERMANENT
        await self._publish_result(job, outcome, status=failure.status, diagnostic=failure.diagnostic)

    async def _publish_result(
        self, job: message_pb2.DeliveryJob, outcome: "message_pb2.Outcome.ValueType", *, status: str, diagnostic: str
    ) -> None:
        """Every recipient of `job` with `outcome` (no SMTP reply) to `results`, confirmed."""
        result = message_pb2.DeliveryResult(
            job=job,
            recipients=[
                message_pb2.RecipientResult(
                    recipient=recipient,
                    outcome=outcome,
                    smtp_code=0,
                    status=status,
                    diagnostic=diagnostic,
                )
                for recipient in job.recipients
            ],
            attempted_at=now_timestamp(),
            reporter=REPORTER,
        )
        await self._publisher.publish(stages.RESULTS, result, message_id=job.job_id)


def _describe_hosts(route: message_pb2.Route) -> str:
    shown = [lifecycle.host_text(host) for host in route.hosts[:LOGGED_HOSTS]]
    more = len(route.hosts) - LOGGED_HOSTS
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
