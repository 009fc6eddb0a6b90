"""Delivery of one job: the route's hosts in order, until every recipient has a final answer.

A host that refuses the connection, times out, drops it, or defers MAIL FROM leaves
its recipients for the next host (RFC 5321 §5.1: try the next MX); recipients still
unanswered after the last host are deferred with the last host's error.
"""

import logging
import time
from collections import Counter

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.metrics import DELIVERY_ATTEMPTS, DELIVERY_DURATION
from kubemta_delivery_worker.replies import local_result, outcome_name
from kubemta_delivery_worker.settings import WorkerSettings
from kubemta_delivery_worker.tls import opportunistic_tls_context
from kubemta_delivery_worker.transaction import HostAttempt, HostFailure, SmtpOptions, attempt_host, host_label

logger = logging.getLogger(__name__)

# RFC 3463 §3.5: 4.4.3 directory server failure (no route could be found).
STATUS_NO_ROUTE = "4.4.3"


def smtp_options(settings: WorkerSettings) -> SmtpOptions:
    """The SMTP client options from the worker's settings."""
    return SmtpOptions(
        ehlo_name=settings.hostname,
        tls_context=opportunistic_tls_context(),
        connect_timeout=settings.smtp_connect_timeout,
        command_timeout=settings.smtp_command_timeout,
        data_timeout=settings.smtp_data_timeout,
    )


class Deliverer:
    """Delivers jobs over SMTP and returns one result per recipient."""

    def __init__(self, options: SmtpOptions) -> None:
        self._options = options

    async def deliver(self, job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
        """One delivery attempt of `job` over all the hosts of its route, in order."""
        started = time.monotonic()
        results = await self._deliver(job)
        DELIVERY_DURATION.observe(time.monotonic() - started)
        for result in results:
            DELIVERY_ATTEMPTS.labels(result=outcome_name(result.outcome)).inc()
        return results

    async def _deliver(self, job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
        recipients = list(dict.fromkeys(job.recipients))
        if not job.route.hosts:
            diagnostic = f"no route to {job.domain}: the job has no hosts to deliver to"
            logger.warning(diagnostic, extra={"queue_id": job.queue_id, "domain": job.domain})
            return [
                local_result(rcpt, message_pb2.OUTCOME_TEMPORARY, STATUS_NO_ROUTE, diagnostic) for rcpt in recipients
            ]
        answered: dict[str, message_pb2.RecipientResult] = {}
        pending = recipients
        failure: HostFailure | None = None
        for host in job.route.hosts:
            attempt = await attempt_host(host, job, pending, self._options)
            answered.update(attempt.results)
            pending = [rcpt for rcpt in pending if rcpt not in answered]
            _log_attempt(job, host, attempt, pending)
            failure = attempt.failure
            if not pending:
                break
        for rcpt in pending:
            answered[rcpt] = _unanswered(rcpt, failure)
        return [answered[rcpt] for rcpt in recipients]


def _unanswered(recipient: str, failure: HostFailure | None) -> message_pb2.RecipientResult:
    if failure is None:  # every host answered something else; should not happen
        failure = HostFailure(diagnostic="no host gave an answer for this recipient", status="4.4.1")
    return local_result(
        recipient,
        message_pb2.OUTCOME_TEMPORARY,
        failure.status,
        failure.diagnostic,
        smtp_code=failure.smtp_code,
        remote_mta=failure.remote_mta,
    )


def _log_attempt(
    job: message_pb2.DeliveryJob, host: message_pb2.RouteHost, attempt: HostAttempt, pending: list[str]
) -> None:
    """One line per host tried: the host, TLS, each answered recipient's outcome, and what is left."""
    label = host_label(host)
    answered = [rcpt for rcpt in job.recipients if rcpt in attempt.results]
    outcomes = {rcpt: outcome_name(attempt.results[rcpt].outcome) for rcpt in answered}
    parts = [f"to=<{rcpt}> {outcomes[rcpt]} ({attempt.results[rcpt].diagnostic})" for rcpt in answered]
    if attempt.failure is not None and pending:
        parts.append(f"{len(pending)} recipient(s) unanswered: {attempt.failure.diagnostic}")
    tally = Counter(outcomes.values())
    logger.log(
        logging.WARNING if attempt.failure is not None and pending else logging.INFO,
        "delivery via %s%s: %s",
        label,
        " (TLS)" if attempt.tls else "",
        "; ".join(parts) or "no recipients",
        extra={
            "queue_id": job.queue_id,
            "job_id": job.job_id,
            "host": label,
            "tls": attempt.tls,
            "outcomes": outcomes,
            "delivered": tally["delivered"],
            "deferred": tally["deferred"],
            "bounced": tally["bounced"],
            "unanswered": len(pending),
        },
    )
