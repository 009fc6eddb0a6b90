"""The `results` stage: what a delivery result leads to, published, then recorded as lifecycle events.

`fate.decide` says who is delivered, retried, bounced or expired; an operator's decision
(kubemta_common.events.decision_follower.JobVerdicts) can delete the message (no retry, no DSN unless the operator
asked for one) or hold it (the retry job goes to `held` instead of its retry queue). Everything the result leads to is
published with confirms, and only then are the events recorded (one per disposition), so an
event never claims a retry or a bounce that is not queued. DSN requests go out for the failure,
delay and success reports the senders asked for (fate.py); recipients found not to exist are then
handed to the suppression sink, when there is one.

A job whose every recipient was delivered and that owes no success DSN never comes here: the delivery worker
ends it (kubemta_delivery_worker.finished) with the same `delivered` event (kubemta_common.events.job_events
.delivered), the same counts (kubemta_recipients_delivered_total, kubemta_queue_time_seconds, which dashboards
sum over both services) and the same log line per recipient as `_count` and `_log` here. The results that do
come carry a deferral, a bounce, a success DSN to send, or an operator's deletion with a DSN.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.held import hold_job
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.stages import Outgoing
from kubemta_common.amqp.topology import HELD, ROUTE, retry_queue_name
from kubemta_common.events import job_events
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import Action as Verb
from kubemta_common.events.decisions import Verdict
from kubemta_common.events.emitter import EventSink
from kubemta_common.logs import sanitize
from kubemta_common.providers import provider_label
from kubemta_queue_manager import lifecycle, metrics
from kubemta_queue_manager.dsn import Action
from kubemta_queue_manager.dsn_requests import dsn_request, success_action
from kubemta_queue_manager.fate import Decision, Deletion, Disposition, Policy, RecipientFate, decide
from kubemta_queue_manager.settings import QueueManagerSettings
from kubemta_queue_manager.suppression_sink import SuppressionSink

logger = logging.getLogger(__name__)


class Results:
    """Decides, publishes and records what each delivery result leads to."""

    def __init__(
        self,
        settings: QueueManagerSettings,
        publisher: HeldPublisher,
        events: EventSink,
        orders: JobVerdicts,
        *,
        clock: Callable[[], datetime],
        hostname: str,
        suppression: SuppressionSink | None = None,
    ) -> None:
        self._policy = Policy(
            retry_schedule=tuple(settings.retry_schedule),
            max_queue_lifetime=settings.max_queue_lifetime,
            delay_warning_after=settings.delay_warning_after,
        )
        self._publisher = publisher
        self._events = events
        self._orders = orders
        self._clock = clock
        self._hostname = hostname
        self._return_size_limit = settings.dsn_return_size_limit
        self._suppression = suppression

    async def handle(self, result: message_pb2.DeliveryResult, *, repeated: bool = False) -> None:
        """Publish the retry job (or hold it) and the DSN requests of `result`, then record its events (`repeated`:
        a redelivered result not known as handled; its retry job is flagged maybe_duplicate)."""
        job = result.job
        now = self._clock()
        verdict = await self._orders.verdict(job)
        deletion = Deletion(dsn=verdict.dsn) if verdict.action is Verb.DELETE else None
        decision = decide(result, self._policy, now, deletion)
        hold = verdict.action is Verb.HOLD and decision.retry is not None
        outgoing: list[Outgoing] = []
        dsn_actions: set[Action] = set()
        if decision.retry is not None:
            decision.retry.maybe_duplicate = repeated  # a fresh attempt unless this result was handled before
        if decision.retry is not None and not hold:
            retry = decision.retry
            outgoing.append(
                stages.retry(decision.retry_delay).outgoing(retry, message_id=f"{retry.job_id}#{retry.attempts}")
            )
        for action, fates in _reports(decision):
            if fates:  # one request per action; the dsn stage merges them with the message's other jobs'
                request = dsn_request(result, decision, fates, action, now, return_size_limit=self._return_size_limit)
                dsn_actions.add(action)
                request_id = f"{job.job_id}#{job.attempts}:{action}"
                outgoing.append(stages.DSN.outgoing(request, message_id=request_id))
        await asyncio.gather(
            self._publisher.publish_all(outgoing) if outgoing else _nothing(),
            self._hold(decision.retry, verdict) if hold and decision.retry is not None else _nothing(),
        )
        self._log(result, decision, dsn_actions, held=hold)
        self._count(job, decision)
        self._suppress(job, decision)
        await self._record(job, decision, verdict, now, held=hold)

    def _suppress(self, job: message_pb2.DeliveryJob, decision: Decision) -> None:
        if self._suppression is None:
            return
        for fate in decision.suppress:
            reason = fate.classification.bounce_class.value if fate.classification is not None else ""
            self._suppression.suppress(
                fate.result.recipient, reason=reason, queue_id=job.queue_id, diagnostic=fate.result.diagnostic
            )

    async def _hold(self, retry: message_pb2.DeliveryJob, verdict: Verdict) -> None:
        """The retry job to `held` (confirmed), with the headers a release reads (kubemta_common.amqp.held)."""
        decision_id = verdict.decision.decision_id if verdict.decision is not None else ""
        await hold_job(self._publisher, retry, queue_id=retry.queue_id, job_id=retry.job_id, decision_id=decision_id)

    async def _record(
        self, job: message_pb2.DeliveryJob, decision: Decision, verdict: Verdict, now: datetime, *, held: bool
    ) -> None:
        """The result's events, once everything it led to was confirmed (a stream outage does not stop mail)."""
        if decision.deleted:
            recipients = [fate.result.recipient for fate in decision.deleted]
            deleted = job_events.deleted(job, verdict.decision, recipients, dsn=verdict.dsn, stage=lifecycle.SERVICE)
            self._events.emit(deleted)
        if held and decision.retry is not None:
            self._events.emit(job_events.held(decision.retry, verdict.decision, release_to=ROUTE))
        events = lifecycle.fates(
            job,
            decision,
            provider=provider_label(job.route.provider),
            retry_queue=HELD if held else retry_queue_name(decision.retry_delay),
            next_attempt=None if held else now + timedelta(seconds=decision.retry_delay),
        )
        await _record_all(self._events, events)

    @staticmethod
    def _log(result: message_pb2.DeliveryResult, decision: Decision, dsn_actions: set[Action], *, held: bool) -> None:
        job = result.job
        for fate in decision.recipients:  # the fate events say the same, one INFO line each
            entry = fate.result
            found = fate.classification
            logger.debug(
                "to=<%s> relay=%s delay=%.0fs attempts=%d dsn=%s status=%s%s (%s)",
                sanitize(entry.recipient),
                sanitize(entry.remote_mta) or "none",
                decision.age,
                job.attempts + 1,
                fate.status,
                fate.disposition,
                f" bounce_class={found.bounce_class} hard={str(found.hard).lower()}" if found is not None else "",
                sanitize(entry.diagnostic),
            )
        if decision.retry is not None:
            logger.debug(
                "retrying %d recipients in %s (attempt %d)",
                len(decision.retry.recipients),
                HELD if held else retry_queue_name(decision.retry_delay),
                decision.retry.attempts + 1,
            )
        for action in sorted(dsn_actions):
            logger.debug("sender %s notification requested (the dsn stage sends it)", action)
        if decision.discarded:
            logger.warning(
                "discarding %d undeliverable recipients: the sender is <>, no notification is sent",
                len(decision.discarded),
            )

    @staticmethod
    def _count(job: message_pb2.DeliveryJob, decision: Decision) -> None:
        provider = provider_label(job.route.provider)
        for fate in decision.recipients:
            if fate.disposition is Disposition.DELIVERED:
                metrics.RECIPIENTS_DELIVERED.labels(provider=provider).inc()
                metrics.QUEUE_TIME.observe(decision.age)
            elif fate.disposition is Disposition.DEFERRED:
                metrics.RECIPIENTS_DEFERRED.labels(provider=provider, **{"class": _class(fate)}).inc()
            elif fate.disposition is not Disposition.DELETED:
                metrics.RECIPIENTS_BOUNCED.labels(provider=provider, **{"class": _class(fate)}).inc()
                metrics.QUEUE_TIME.observe(decision.age)
                if fate.disposition is Disposition.EXPIRED:
                    metrics.RECIPIENTS_EXPIRED.inc()
        if decision.discarded:
            metrics.UNDELIVERABLE_NULL_SENDER.inc()


def _class(fate: RecipientFate) -> str:
    """The `class` label of a failed recipient (always one of metrics.CLASSES)."""
    return fate.classification.bounce_class.value if fate.classification is not None else "other"


def _reports(decision: Decision) -> list[tuple[Action, list[RecipientFate]]]:
    """The DSN requests `decision` calls for: failure, delay, and success by action (delivered, relayed)."""
    success: dict[Action, list[RecipientFate]] = {}
    for fate in decision.success:
        success.setdefault(success_action(fate), []).append(fate)
    return [(Action.FAILED, decision.bounce), (Action.DELAYED, decision.warn), *success.items()]


async def _nothing() -> None:
    return None


async def _record_all(events: EventSink, batch: Sequence[events_pb2.LifecycleEvent]) -> None:
    """Record several events, their confirms awaited together."""
    await asyncio.gather(*(events.record(event) for event in batch))
