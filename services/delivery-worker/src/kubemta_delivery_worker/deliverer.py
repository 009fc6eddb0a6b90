"""Delivery of one job: the route's hosts in order, until every recipient has a final answer.

A host that refuses the connection, times out, drops it, or defers MAIL FROM leaves
its recipients for the next host (RFC 5321 §5.1: try the next MX); recipients still
unanswered after the last host are deferred with the last host's error.

Each attempt is bounded (attempt_limits.py): a deadline counted from when the job has
its destination slot (every timeout cut to the time left; once it has passed no other
host is tried and the unanswered recipients are deferred, saying so), at most
KUBEMTA_SMTP_MX_ADDRESS_LIMIT hosts tried and KUBEMTA_SMTP_MX_SESSION_LIMIT greeted
sessions, as Postfix bounds its MX walk. A recipient whose transaction got as far as
the final dot keeps that host's answer (a lost reply is "may be sent more than once",
never another host).

Around that: the destination's concurrency slot and back-off (destinations.py; a
host asking us to slow down ends the job's attempt, its recipients are deferred, and
the destination pauses), and the idle connection cache the hosts' sessions come from
and go back to (pool.py).
"""

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from kubemta.v1 import message_pb2
from kubemta_common.logs import message_context, sanitize
from kubemta_delivery_worker.attempt_limits import AttemptDeadline, AttemptLimits, deadline_text
from kubemta_delivery_worker.connection import STATUS_NO_ANSWER
from kubemta_delivery_worker.destinations import (
    DestinationDeferred,
    Destinations,
    Throttle,
    destination_of,
    first_throttle,
)
from kubemta_delivery_worker.metrics import DELIVERY_ATTEMPTS, DELIVERY_DURATION
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.registry import transport_for
from kubemta_delivery_worker.relay_auth import relay_credentials
from kubemta_delivery_worker.replies import local_result, outcome_name
from kubemta_delivery_worker.settings import WorkerSettings
from kubemta_delivery_worker.tls import opportunistic_tls_context, verifying_tls_context
from kubemta_delivery_worker.transaction import HostAttempt, HostFailure, SmtpConnection, SmtpOptions

logger = logging.getLogger(__name__)

# RFC 3463 §3.5: 4.4.3 directory server failure (no route could be found).
STATUS_NO_ROUTE = "4.4.3"

# kubemta_delivery_attempts_total's child per outcome, looked up once rather than per recipient.
_ATTEMPTS_BY_OUTCOME = {
    outcome: DELIVERY_ATTEMPTS.labels(result=outcome_name(outcome)) for outcome in message_pb2.Outcome.values()
}


def smtp_options(settings: WorkerSettings) -> SmtpOptions:
    """The SMTP client options from the worker's settings."""
    return SmtpOptions(
        ehlo_name=settings.hostname,
        tls_context=opportunistic_tls_context(),
        connect_timeout=settings.smtp_connect_timeout,
        command_timeout=settings.smtp_command_timeout,
        data_timeout=settings.smtp_data_timeout,
        pipelining=settings.smtp_pipelining,
        verify_tls_context=verifying_tls_context(settings.tls_ca_file),
        relay_credentials=relay_credentials(
            settings.relayhost_username, settings.relayhost_password, settings.relayhost_tls_unverified_name
        ),
    )


def build_deliverer(settings: WorkerSettings) -> "Deliverer":
    """The worker's deliverer: SMTP options, the idle connection cache and the destination limits."""
    pool: ConnectionPool[SmtpConnection] = ConnectionPool(
        idle_seconds=settings.connection_idle_seconds,
        per_host=settings.connection_cache_per_host,
        total=settings.connection_cache_size,
    )
    destinations = Destinations(
        concurrency=settings.destination_concurrency,
        backoff_seconds=settings.destination_backoff,
        wait_seconds=settings.destination_wait,
    )
    limits = AttemptLimits(
        deadline=settings.delivery_attempt_deadline,
        addresses=settings.smtp_mx_address_limit,
        sessions=settings.smtp_mx_session_limit,
    )
    return Deliverer(smtp_options(settings), pool=pool, destinations=destinations, limits=limits)


@dataclass(slots=True)
class AttemptReport:
    """One delivery attempt of a job: a result per recipient, the host that answered last (None when none was
    tried) with its session's TLS, and how long it took (the `attempted` lifecycle event says all this)."""

    results: list[message_pb2.RecipientResult] = field(default_factory=list)
    host: message_pb2.RouteHost | None = None
    port: int = 0
    tls_version: str = ""
    tls_cipher: str = ""
    duration: float = 0.0


@dataclass(slots=True)
class _LastHost:
    host: message_pb2.RouteHost | None = None
    port: int = 0
    tls_version: str = ""
    tls_cipher: str = ""


class Deliverer:
    """Delivers jobs over the route's transport (registry.py) and returns one result per recipient.

    Without `pool` every session is new and closed after its transaction; without
    `destinations` there is no per-destination limit; `limits` bound each attempt.
    """

    def __init__(
        self,
        options: SmtpOptions,
        *,
        pool: ConnectionPool[SmtpConnection] | None = None,
        destinations: Destinations | None = None,
        limits: AttemptLimits | None = None,
    ) -> None:
        self._options = options
        self._pool = pool
        self._destinations = destinations
        self._limits = limits or AttemptLimits()

    @property
    def limits(self) -> AttemptLimits:
        """The deadline and host caps of each attempt."""
        return self._limits

    async def close(self) -> None:
        """QUIT the idle cached connections (at shutdown)."""
        if self._pool is not None:
            await self._pool.close()

    async def deliver(self, job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
        """One delivery attempt of `job` over all the hosts of its route, in order."""
        return (await self.attempt(job)).results

    async def attempt(self, job: message_pb2.DeliveryJob) -> AttemptReport:
        """One delivery attempt of `job` (as `deliver`), with the host that answered last and its TLS."""
        started = time.monotonic()
        last = _LastHost()
        with message_context(sanitize(job.queue_id), sanitize(job.job_id)):  # as the handler's (set there too)
            results = await self._limited(job, last)
        duration = time.monotonic() - started
        DELIVERY_DURATION.observe(duration)
        for result in results:
            counter = _ATTEMPTS_BY_OUTCOME.get(result.outcome)
            (counter or DELIVERY_ATTEMPTS.labels(result=outcome_name(result.outcome))).inc()
        return AttemptReport(results, last.host, last.port, last.tls_version, last.tls_cipher, duration)

    async def _limited(self, job: message_pb2.DeliveryJob, last: _LastHost) -> list[message_pb2.RecipientResult]:
        """The delivery inside the destination's slot; deferred without connecting when paused or full."""
        recipients = list(dict.fromkeys(job.recipients))
        if not job.route.hosts:
            diagnostic = f"no route to {job.domain}: the job has no hosts to deliver to"
            logger.warning(diagnostic, extra={"domain": job.domain})
            return [
                local_result(rcpt, message_pb2.OUTCOME_TEMPORARY, STATUS_NO_ROUTE, diagnostic) for rcpt in recipients
            ]
        if self._destinations is None:
            results, _ = await self._deliver(job, recipients, last)
            return results
        destination = destination_of(job)
        try:
            async with self._destinations.slot(destination) as slot:
                results, throttle = await self._deliver(job, recipients, last)
                if throttle is not None:
                    slot.throttled(throttle)
                return results
        except DestinationDeferred as exc:
            logger.info(
                "deferred without connecting: %s",
                exc.diagnostic,
                extra={"destination": destination},
            )
            return [
                local_result(rcpt, message_pb2.OUTCOME_TEMPORARY, exc.status, exc.diagnostic) for rcpt in recipients
            ]

    async def _deliver(
        self, job: message_pb2.DeliveryJob, recipients: list[str], last: _LastHost
    ) -> tuple[list[message_pb2.RecipientResult], Throttle | None]:
        """The route's hosts in order, within the attempt's limits; stops early at a host that asked us to slow down."""
        answered: dict[str, message_pb2.RecipientResult] = {}
        pending = recipients
        failure: HostFailure | None = None
        throttle: Throttle | None = None
        tried = greeted = 0
        transport = transport_for(job.route.kind)  # registry.py: SMTP, LMTP, ...
        with AttemptDeadline(self._limits.deadline) as deadline:
            options = self._options.for_attempt(deadline)
            for host in job.route.hosts:
                if self._stop(job, deadline, tried, greeted):
                    break
                attempt = await transport.attempt(host, job, pending, options, self._pool)
                tried += 1
                greeted += attempt.greeted
                last.host, last.port = host, transport.dialect.port(host)
                last.tls_version, last.tls_cipher = attempt.tls_version, attempt.tls_cipher
                answered.update(attempt.results)
                pending = [rcpt for rcpt in pending if rcpt not in answered]
                _log_attempt(job, transport.label(host), attempt, pending)
                failure = attempt.failure
                throttle = _throttle(attempt)
                if not pending or throttle is not None:
                    break
            if pending and deadline.passed:
                failure = _deadline_failure(job, deadline, failure, tried)
        for rcpt in pending:
            answered[rcpt] = _unanswered(rcpt, failure)
        return [answered[rcpt] for rcpt in recipients], throttle

    def _stop(self, job: message_pb2.DeliveryJob, deadline: AttemptDeadline, tried: int, greeted: int) -> bool:
        """True when the attempt may try no further host: deadline passed, address or session limit reached."""
        if deadline.passed:
            return True
        limits = self._limits
        if limits.addresses and tried >= limits.addresses:
            reason = f"{tried} addresses tried (KUBEMTA_SMTP_MX_ADDRESS_LIMIT {limits.addresses})"
        elif limits.sessions and greeted >= limits.sessions:
            reason = f"{greeted} sessions greeted (KUBEMTA_SMTP_MX_SESSION_LIMIT {limits.sessions})"
        else:
            return False
        logger.info(
            "no more hosts this attempt: %s; %d of the route's %d addresses left untried",
            reason,
            len(job.route.hosts) - tried,
            len(job.route.hosts),
            extra={"hosts_tried": tried},
        )
        return True


def _throttle(attempt: HostAttempt) -> Throttle | None:
    """The host's slow-down reply, if it gave one (to a connection-level command or to a recipient)."""
    replies = [(r.smtp_code, r.status, r.diagnostic) for r in attempt.results.values()]
    if attempt.failure is not None:
        replies.insert(0, (attempt.failure.smtp_code, attempt.failure.status, attempt.failure.diagnostic))
    return first_throttle(replies)


def _deadline_failure(
    job: message_pb2.DeliveryJob, deadline: AttemptDeadline, last: HostFailure | None, tried: int
) -> HostFailure:
    """Why the unanswered recipients are deferred when the deadline ended the attempt: the deadline, and the
    last host's own failure (RFC 3463 §3.5 asks for the actual problem's code rather than X.4.7)."""
    hosts = len(job.route.hosts)
    diagnostic = f"{deadline_text(deadline)} after {tried} of {hosts} route address(es)"
    if last is not None:
        diagnostic += f"; last: {last.diagnostic}"
    logger.warning(
        "delivery attempt ended by its deadline: %s",
        diagnostic,
        extra={"hosts_tried": tried},
    )
    if last is None:
        return HostFailure(diagnostic=diagnostic, status=STATUS_NO_ANSWER)
    return dataclasses.replace(last, diagnostic=diagnostic)


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


def _log_attempt(job: message_pb2.DeliveryJob, label: str, attempt: HostAttempt, pending: list[str]) -> None:
    """One line per host tried: the host, TLS, each answered recipient's outcome, and what is left (built only
    when it will be logged)."""
    # A host that left recipients unanswered is a warning; otherwise the `attempted` event says it (DEBUG).
    level = logging.WARNING if attempt.failure is not None and pending else logging.DEBUG
    if not logger.isEnabledFor(level):
        return
    answered = [rcpt for rcpt in job.recipients if rcpt in attempt.results]
    outcomes = {rcpt: outcome_name(attempt.results[rcpt].outcome) for rcpt in answered}
    parts = [f"to=<{rcpt}> {outcomes[rcpt]} ({attempt.results[rcpt].diagnostic})" for rcpt in answered]
    if attempt.failure is not None and pending:
        parts.append(f"{len(pending)} recipient(s) unanswered: {attempt.failure.diagnostic}")
    tally = Counter(outcomes.values())
    logger.log(
        level,
        "delivery via %s%s: %s",
        label,
        " (TLS)" if attempt.tls else "",
        "; ".join(parts) or "no recipients",
        extra={
            "host": label,
            "tls": attempt.tls,
            "outcomes": outcomes,
            "delivered": tally["delivered"],
            "deferred": tally["deferred"],
            "bounced": tally["bounced"],
            "unanswered": len(pending),
        },
    )
