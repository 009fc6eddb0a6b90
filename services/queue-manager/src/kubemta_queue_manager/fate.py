"""A delivery result's consequences: who is done, who is retried when, who bounces, whether to warn.

Pure decisions with no I/O; `handlers` publishes what they call for. Per recipient:

- delivered: final;
- permanent failure: bounced;
- temporary failure: retried after the next delay of the schedule, unless the message
  is older than the queue lifetime, in which case it is bounced as expired with
  status 4.4.7 (RFC 3463 §3.5, "delivery time expired"), keeping the last diagnostic.

A message from the null sender `<>` (or one kubemta generated, i.e. a DSN) is never
bounced (RFC 5321 §4.5.5, RFC 3464 §2): its undeliverable recipients are dropped.

What the sender asked with NOTIFY (RFC 3461 §4.1, DeliveryJob.recipient_dsn) decides who is
reported: a failure DSN only for recipients that want failures, a delay warning only for those
that want delays (without NOTIFY: both, as before), a success DSN for a delivered recipient that
asked for one, unless the next hop took the DSN parameters over (HANDOFF_DSN_PASSED: it reports
from then on); NOTIFY=NEVER: nothing. A recipient not reported keeps its fate.

Every failure is classified (kubemta_common.bounce_class) for metrics, events, logs and DSNs; a
recipient that bounced permanently as an invalid address (hard) is to be suppressed.

A message an operator deleted (`Deletion`, from an admin DELETE decision) is never retried:
without a DSN every recipient not delivered is deleted (no retry, no bounce, no warning); with
one, the recipients that would have been retried bounce with 5.3.0 "deleted by the
administrator" and the others keep their own fate.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from kubemta.v1 import message_pb2
from kubemta_common.bounce_class import BounceClass, Classification, classify
from kubemta_common.dsn_parameters import DsnKind, recipient_dsn, wants
from kubemta_common.events.deletion import deleted_result
from kubemta_common.timestamps import age_seconds, to_datetime
from kubemta_queue_manager.retry import retry_delay

EXPIRED_STATUS = "4.4.7"
"""RFC 3463 §3.5: X.4.7 delivery time expired."""

_STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
"""RFC 3463 §2: class.subject.detail."""


class Disposition(StrEnum):
    """What becomes of one recipient after a result."""

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Policy:
    """The settings a decision depends on, in seconds."""

    retry_schedule: Sequence[float]
    max_queue_lifetime: float
    delay_warning_after: float


@dataclass(frozen=True, slots=True)
class Deletion:
    """An operator deleted the message: `dsn` when the sender is told (a failure DSN) about it."""

    dsn: bool


@dataclass(frozen=True, slots=True)
class RecipientFate:
    """One recipient's result (status filled in) and what becomes of it."""

    result: message_pb2.RecipientResult
    disposition: Disposition
    classification: Classification | None = None
    """The failure's class and hardness; None for a delivered recipient."""

    @property
    def status(self) -> str:
        """The status to report: the result's, or 4.4.7 for an expired recipient."""
        return EXPIRED_STATUS if self.disposition is Disposition.EXPIRED else self.result.status


@dataclass(slots=True)
class Decision:
    """Everything `decide` concluded about one DeliveryResult."""

    age: float
    """Seconds since the message arrived."""
    recipients: list[RecipientFate] = field(default_factory=list)
    retry: message_pb2.DeliveryJob | None = None
    retry_delay: float = 0.0
    bounce: list[RecipientFate] = field(default_factory=list)
    """Recipients to report in a failure DSN (empty when the sender must not get one)."""
    discarded: list[RecipientFate] = field(default_factory=list)
    """Undeliverable recipients of a null-sender message: dropped without a DSN."""
    warn: list[RecipientFate] = field(default_factory=list)
    """Deferred recipients to report in a delay warning (empty when none is due)."""
    deleted: list[RecipientFate] = field(default_factory=list)
    """Recipients an operator's deletion took out of the queue (deleted, or bounced with 5.3.0 when a DSN was
    asked for)."""
    will_retry_until: datetime | None = None
    success: list[RecipientFate] = field(default_factory=list)
    """Delivered recipients whose sender asked for a success DSN (NOTIFY=SUCCESS) that kubemta must send."""
    suppress: list[RecipientFate] = field(default_factory=list)
    """Recipients that bounced permanently as invalid addresses (hard): for the suppression list."""


def status_of(result: message_pb2.RecipientResult) -> str:
    """The result's RFC 3463 status, or one derived from its outcome when missing or malformed."""
    if _STATUS_RE.match(result.status):
        return result.status
    if result.outcome == message_pb2.OUTCOME_DELIVERED:
        return "2.0.0"
    if result.outcome == message_pb2.OUTCOME_PERMANENT:
        return "5.0.0"
    return "4.0.0"


def _normalised(result: message_pb2.RecipientResult) -> message_pb2.RecipientResult:
    copy = message_pb2.RecipientResult()
    copy.CopyFrom(result)
    copy.status = status_of(result)
    return copy


def _results_for_every_recipient(result: message_pb2.DeliveryResult) -> list[message_pb2.RecipientResult]:
    """The reported results, plus a temporary failure for any job recipient the reporter left out.

    The message's state travels in the result, so a recipient missing from it would be lost.
    """
    results = list(result.recipients)
    reported = {entry.recipient for entry in results}
    for recipient in result.job.recipients:
        if recipient not in reported:
            results.append(
                message_pb2.RecipientResult(
                    recipient=recipient,
                    outcome=message_pb2.OUTCOME_TEMPORARY,  # its status, 4.0.0, is filled in by `status_of`
                    diagnostic="no result reported for this recipient",
                )
            )
    return results


def _wanted(job: message_pb2.DeliveryJob, fates: list[RecipientFate], kind: DsnKind) -> list[RecipientFate]:
    return [fate for fate in fates if wants(recipient_dsn(job, fate.result.recipient), kind)]


def _failed(entry: message_pb2.RecipientResult, disposition: Disposition) -> RecipientFate:
    """A failed recipient's fate with its class (from the reply's code, status and text; expired: `expired`)."""
    expired = disposition is Disposition.EXPIRED
    found = classify(entry.smtp_code, entry.status, entry.diagnostic, expired=expired)
    return RecipientFate(entry, disposition, found)


def _suppressible(fate: RecipientFate) -> bool:
    found = fate.classification
    return (
        fate.disposition is Disposition.BOUNCED
        and found is not None
        and found.hard
        and found.bounce_class is BounceClass.INVALID_RECIPIENT
    )


def never_bounced(job: message_pb2.DeliveryJob) -> bool:
    """True for the null sender `<>` and for kubemta's own DSNs: they never get a DSN back."""
    return not job.sender or job.generated


def decide(
    result: message_pb2.DeliveryResult, policy: Policy, now: datetime, deletion: Deletion | None = None
) -> Decision:
    """Decide the fate of every recipient of `result` at time `now` (`deletion`: an operator deleted it)."""
    job = result.job
    age = age_seconds(job.arrival_time, now)
    expired = age >= policy.max_queue_lifetime
    decision = Decision(age=age)
    deferred: list[RecipientFate] = []
    undeliverable: list[RecipientFate] = []
    for entry in _results_for_every_recipient(result):
        normal = _normalised(entry)
        if entry.outcome == message_pb2.OUTCOME_DELIVERED:
            fate = RecipientFate(normal, Disposition.DELIVERED)
        elif deletion is not None and not deletion.dsn:
            fate = _failed(normal, Disposition.DELETED)
            decision.deleted.append(fate)
        elif entry.outcome == message_pb2.OUTCOME_PERMANENT:
            fate = _failed(normal, Disposition.BOUNCED)
            undeliverable.append(fate)
            if _suppressible(fate):
                decision.suppress.append(fate)
        elif expired:
            fate = _failed(normal, Disposition.EXPIRED)
            undeliverable.append(fate)
        elif deletion is not None:  # would be retried; deleted with a DSN: bounced (not suppressed: not its fault)
            fate = _failed(deleted_result(entry.recipient), Disposition.BOUNCED)
            undeliverable.append(fate)
            decision.deleted.append(fate)
        else:  # temporary (an unspecified outcome is treated as temporary: never lose a recipient)
            fate = _failed(normal, Disposition.DEFERRED)
            deferred.append(fate)
        decision.recipients.append(fate)

    if never_bounced(job):
        decision.discarded = undeliverable
    else:
        decision.bounce = _wanted(job, undeliverable, "failure")
        delivered = [f for f in decision.recipients if f.disposition is Disposition.DELIVERED]
        decision.success = [
            fate for fate in _wanted(job, delivered, "success") if fate.result.handoff != message_pb2.HANDOFF_DSN_PASSED
        ]

    if deferred:
        retry = message_pb2.DeliveryJob()
        retry.CopyFrom(job)
        retry.ClearField("route")
        del retry.recipients[:]
        retry.recipients.extend(fate.result.recipient for fate in deferred)
        retried = set(retry.recipients)
        for recipient in [name for name in retry.recipient_dsn if name not in retried]:
            del retry.recipient_dsn[recipient]  # only its own recipients' parameters, as the splitter gives them
        retry.attempts = job.attempts + 1
        decision.retry = retry
        decision.retry_delay = retry_delay(policy.retry_schedule, retry.attempts)
        decision.will_retry_until = to_datetime(job.arrival_time) + timedelta(seconds=policy.max_queue_lifetime)
        if (
            policy.delay_warning_after > 0
            and age >= policy.delay_warning_after
            and not job.delay_warning_sent
            and not never_bounced(job)
        ):
            decision.warn = _wanted(job, deferred, "delay")
            retry.delay_warning_sent = True  # due once: those who did not ask for it never get it later either
    return decision
