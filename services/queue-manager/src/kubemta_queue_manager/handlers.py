"""The queue-manager's consumers: `inbound` (split into jobs), `results` (decide each recipient's fate) and
`dsn` (the batcher), each handler taking its stage's message decoded (kubemta_common.amqp.stages).

Each handler publishes everything its input leads to with publisher confirms and
returns only after all of them were confirmed; returning acknowledges the input. A
`PublishFailed` propagates, so the input is requeued (at-least-once: a partly
published batch may be published again). The queue-manager keeps no state: it all
travels in the messages.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.amqp.stages import Outgoing
from kubemta_common.amqp.topology import retry_queue_name
from kubemta_common.errors import PermanentError
from kubemta_common.logs import message_context, sanitize
from kubemta_common.providers import provider_label
from kubemta_queue_manager import metrics
from kubemta_queue_manager.dkim_signer import DkimSigner, Outcome
from kubemta_queue_manager.dsn import Action
from kubemta_queue_manager.dsn_batcher import DsnBatcher
from kubemta_queue_manager.dsn_requests import dsn_request
from kubemta_queue_manager.fate import Decision, Disposition, Policy, decide
from kubemta_queue_manager.settings import QueueManagerSettings
from kubemta_queue_manager.splitter import iter_jobs

logger = logging.getLogger(__name__)

PUBLISH_BATCH_BYTES = 16 * 1024 * 1024
"""Job bytes published (and held) at once when one message becomes many jobs."""


def may_sign(accepted: message_pb2.AcceptedMessage) -> bool:
    """True when kubemta may vouch for the message with its DKIM signature.

    Only mail the ingress trusted (an authenticated session, whose From: it checked against the
    user's identities, or a client in KUBEMTA_RELAY_NETWORKS) and kubemta's own DSNs: signing a
    stranger's `From: ceo@example.com` would hand a forger a valid, DMARC-aligned signature.
    """
    return accepted.generated or accepted.trust != message_pb2.TRUST_UNTRUSTED


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class QueueManager:
    """The handlers of the `inbound`, `results` and `dsn` stages."""

    def __init__(
        self,
        settings: QueueManagerSettings,
        publisher: BusPublisher,
        *,
        clock: Callable[[], datetime] = utc_now,
        signer: DkimSigner | None = None,
    ) -> None:
        self._hostname = settings.hostname
        self._policy = Policy(
            retry_schedule=tuple(settings.retry_schedule),
            max_queue_lifetime=settings.max_queue_lifetime,
            delay_warning_after=settings.delay_warning_after,
        )
        self._publisher = publisher
        self._clock = clock
        self._signer = signer
        self._batcher = DsnBatcher(
            publisher,
            settings.hostname,
            window=settings.dsn_batch_window,
            max_held=settings.dsn_batch_limit,
            clock=clock,
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

    async def handle_accepted(self, accepted: message_pb2.AcceptedMessage) -> None:
        """DKIM-sign an AcceptedMessage once, split it into one job per domain and queue them all to `route`."""
        with message_context(accepted.queue_id):
            await self._accept(accepted)

    async def _accept(self, accepted: message_pb2.AcceptedMessage) -> None:
        if self._signer is not None and accepted.recipients:
            if may_sign(accepted):
                accepted.content = await self._sign(self._signer, accepted.content)
            else:
                metrics.DKIM_SIGNATURES.labels(algorithm="none", result="untrusted").inc()
                logger.debug("not DKIM signed: submitted by an untrusted client")
        jobs = await self._publish_jobs(accepted)
        if not jobs:
            logger.warning("message has no recipients; nothing to deliver")
            return
        logger.info(
            "from=<%s> nrcpt=%d size=%d jobs=%d%s",
            sanitize(accepted.sender),
            len(accepted.recipients),
            len(accepted.content),
            jobs,
            " (generated DSN)" if accepted.generated else "",
        )
        metrics.MESSAGES_SPLIT.inc()
        metrics.JOBS_CREATED.inc(jobs)

    async def _publish_jobs(self, accepted: message_pb2.AcceptedMessage) -> int:
        """Publish one job per domain to `route`, a batch of at most PUBLISH_BATCH_BYTES at a time; how many.

        Each job carries the whole content, so a 10 MB message to 50 domains would hold 500 MB if its jobs were
        made (and serialised) all at once: they are made one by one, and each batch is released once confirmed.
        Small messages still go in one batch, all confirms awaited together.
        """
        batch: list[Outgoing] = []
        queued: list[tuple[str, str, int]] = []
        size = published = 0
        for job in iter_jobs(accepted, self._hostname):
            outgoing = stages.ROUTE.outgoing(job, message_id=job.job_id)
            batch.append(outgoing)
            queued.append((job.job_id, job.domain, len(job.recipients)))
            size += len(outgoing.body)
            del job, outgoing
            if size >= PUBLISH_BATCH_BYTES:
                published += await self._publish_batch(batch, queued)
                batch, queued, size = [], [], 0
        if batch:
            published += await self._publish_batch(batch, queued)
        return published

    async def _publish_batch(self, batch: list[Outgoing], queued: list[tuple[str, str, int]]) -> int:
        await self._publisher.publish_all(batch)
        for job_id, domain, recipients in queued:
            logger.info(
                "job %s: domain=%s nrcpt=%d queued to %s",
                job_id,
                sanitize(domain),
                recipients,
                stages.ROUTE.queue,
                extra={"job_id": job_id},
            )
        return len(batch)

    async def _sign(self, signer: DkimSigner, content: bytes) -> bytes:
        """`content` DKIM-signed once for all its jobs; unsigned (and logged) when signing fails, never lost."""
        try:
            result = await asyncio.to_thread(signer.sign, content)
        except Exception:
            logger.exception("DKIM signing failed; sending the message unsigned")
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result="error").inc()
            return content
        for key in result.signed:
            metrics.DKIM_SIGNATURES.labels(algorithm=key.algorithm.value, result="signed").inc()
            logger.info("DKIM signed: d=%s s=%s a=%s", key.domain, key.selector, key.algorithm)
        for key in result.failed:
            metrics.DKIM_SIGNATURES.labels(algorithm=key.algorithm.value, result="error").inc()
        if result.outcome is Outcome.NO_FROM:
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result=result.outcome.value).inc()
            logger.debug("not DKIM signed: no single From: mailbox")
        elif result.outcome is Outcome.NO_KEY:
            metrics.DKIM_SIGNATURES.labels(algorithm="none", result=result.outcome.value).inc()
            logger.debug("not DKIM signed: no key for %s", sanitize(result.domain or ""))
        return result.content

    async def handle_result(self, result: message_pb2.DeliveryResult) -> None:
        """Decide each recipient's fate and publish the retry job and DSNs it calls for."""
        job = result.job
        if not result.HasField("job") or not job.queue_id:
            raise PermanentError("delivery result without its job")
        with message_context(job.queue_id, job.job_id):
            await self._decide(result)

    async def _decide(self, result: message_pb2.DeliveryResult) -> None:
        job = result.job
        now = self._clock()
        decision = decide(result, self._policy, now)
        outgoing: list[Outgoing] = []
        dsn_actions: set[Action] = set()
        if decision.retry is not None:
            retry = decision.retry
            outgoing.append(
                stages.retry(decision.retry_delay).outgoing(retry, message_id=f"{retry.job_id}#{retry.attempts}")
            )
        for action, fates in ((Action.FAILED, decision.bounce), (Action.DELAYED, decision.warn)):
            if fates:  # one request per action; the dsn stage merges them with the message's other jobs'
                request = dsn_request(result, decision, fates, action, now)
                dsn_actions.add(action)
                request_id = f"{job.job_id}#{job.attempts}:{action}"
                outgoing.append(stages.DSN.outgoing(request, message_id=request_id))
        if outgoing:
            await self._publisher.publish_all(outgoing)
        self._log(result, decision, dsn_actions)
        self._count(job, decision)

    def _log(self, result: message_pb2.DeliveryResult, decision: Decision, dsn_actions: set[Action]) -> None:
        job = result.job
        for fate in decision.recipients:
            entry = fate.result
            logger.info(
                "to=<%s> relay=%s delay=%.0fs attempts=%d dsn=%s status=%s (%s)",
                sanitize(entry.recipient),
                sanitize(entry.remote_mta) or "none",
                decision.age,
                job.attempts + 1,
                fate.status,
                fate.disposition,
                sanitize(entry.diagnostic),
            )
        if decision.retry is not None:
            logger.info(
                "retrying %d recipients in %s (attempt %d)",
                len(decision.retry.recipients),
                retry_queue_name(decision.retry_delay),
                decision.retry.attempts + 1,
            )
        for action in sorted(dsn_actions):
            logger.info("sender %s notification requested (the dsn stage sends it)", action)
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
                metrics.RECIPIENTS_DEFERRED.labels(provider=provider).inc()
            else:
                metrics.RECIPIENTS_BOUNCED.labels(provider=provider).inc()
                metrics.QUEUE_TIME.observe(decision.age)
                if fate.disposition is Disposition.EXPIRED:
                    metrics.RECIPIENTS_EXPIRED.inc()
        if decision.discarded:
            metrics.UNDELIVERABLE_NULL_SENDER.inc()
