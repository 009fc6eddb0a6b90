"""`fate.decide` on a message an operator deleted: never retried; without a DSN nothing but the delivered
recipients keeps a fate of its own; with one, what would have been retried bounces with 5.3.0."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.events.deletion import DELETED_DIAGNOSTIC, DELETED_STATUS
from kubemta_queue_manager.fate import Deletion, Disposition, Policy, decide

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICY = Policy(retry_schedule=(300.0,), max_queue_lifetime=5 * 86400.0, delay_warning_after=3600.0)
OUTCOMES = st.sampled_from(
    [
        message_pb2.OUTCOME_DELIVERED,
        message_pb2.OUTCOME_TEMPORARY,
        message_pb2.OUTCOME_PERMANENT,
        message_pb2.OUTCOME_UNSPECIFIED,
    ]
)


def result(
    outcomes: list["message_pb2.Outcome.ValueType"], *, sender: str = "alice@example.com", age_hours: float = 2.0
) -> message_pb2.DeliveryResult:
    recipients = [f"r{number}@example.org" for number in range(len(outcomes))]
    job = message_pb2.DeliveryJob(
        queue_id="Q", job_id="Q.1", sender=sender, domain="example.org", recipients=recipients
    )
    job.arrival_time.FromDatetime(NOW - timedelta(hours=age_hours))
    made = message_pb2.DeliveryResult(job=job)
    for recipient, outcome in zip(recipients, outcomes, strict=True):
        made.recipients.add(recipient=recipient, outcome=outcome, status="4.2.0", diagnostic="busy", smtp_code=451)
    return made


@given(st.lists(OUTCOMES, min_size=1, max_size=8), st.sampled_from(["alice@example.com", ""]), st.floats(0, 200))
def test_deleted_without_a_dsn_nothing_is_retried_warned_or_bounced(outcomes, sender, age_hours) -> None:
    decision = decide(result(outcomes, sender=sender, age_hours=age_hours), POLICY, NOW, Deletion(dsn=False))
    assert decision.retry is None and decision.bounce == [] and decision.warn == [] and decision.discarded == []
    for fate, outcome in zip(decision.recipients, outcomes, strict=True):
        delivered = outcome == message_pb2.OUTCOME_DELIVERED
        assert fate.disposition is (Disposition.DELIVERED if delivered else Disposition.DELETED)
    assert decision.deleted == [fate for fate in decision.recipients if fate.disposition is Disposition.DELETED]


@given(st.lists(OUTCOMES, min_size=1, max_size=8), st.floats(0, 200))
def test_deleted_with_a_dsn_what_would_be_retried_bounces_5_3_0(outcomes, age_hours) -> None:
    decision = decide(result(outcomes, age_hours=age_hours), POLICY, NOW, Deletion(dsn=True))
    assert decision.retry is None and decision.warn == []
    assert all(fate.disposition is not Disposition.DEFERRED for fate in decision.recipients)
    undelivered = [fate for fate in decision.recipients if fate.disposition is not Disposition.DELIVERED]
    assert decision.bounce == undelivered
    for fate in decision.deleted:
        assert (fate.disposition, fate.status, fate.result.diagnostic) == (
            Disposition.BOUNCED,
            DELETED_STATUS,
            DELETED_DIAGNOSTIC,
        )
        assert fate.result.outcome == message_pb2.OUTCOME_PERMANENT


def test_a_permanent_failure_keeps_its_own_reason_in_a_deletion_dsn() -> None:
    decision = decide(
        result([message_pb2.OUTCOME_PERMANENT, message_pb2.OUTCOME_TEMPORARY]), POLICY, NOW, Deletion(dsn=True)
    )
    assert [(fate.status, fate.result.diagnostic) for fate in decision.bounce] == [
        ("4.2.0", "busy"),
        (DELETED_STATUS, DELETED_DIAGNOSTIC),
    ]
    assert [fate.result.recipient for fate in decision.deleted] == ["r1@example.org"]


def test_a_null_sender_message_deleted_with_a_dsn_gets_none() -> None:
    decision = decide(result([message_pb2.OUTCOME_TEMPORARY], sender=""), POLICY, NOW, Deletion(dsn=True))
    assert decision.bounce == [] and decision.retry is None
    assert [fate.result.recipient for fate in decision.discarded] == ["r0@example.org"]


def test_no_deletion_changes_nothing() -> None:
    made = result([message_pb2.OUTCOME_TEMPORARY])
    assert decide(made, POLICY, NOW, None) == decide(made, POLICY, NOW)
    assert decide(made, POLICY, NOW).deleted == []
