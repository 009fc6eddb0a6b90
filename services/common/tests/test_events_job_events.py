"""The job events several services write (held, deleted, duplicate), the deletion result, and is_redelivery."""

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from hypothesis import given
from hypothesis import strategies as st

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.consumer import UNANSWERED_RETURNS, is_redelivery, return_if_unanswered
from kubemta_common.amqp.topology import DELIVERY_LIMIT
from kubemta_common.errors import TransientError
from kubemta_common.events import job_events
from kubemta_common.events.deletion import DELETED_DIAGNOSTIC, DELETED_STATUS, deleted_result, deletion_result
from kubemta_common.events.log_kinds import event_kind


def make_job(**fields: Any) -> message_pb2.DeliveryJob:
    values: dict[str, Any] = {
        "queue_id": "Q1",
        "job_id": "Q1.1",
        "message_id": "<m1@example.com>",
        "attempts": 2,
        "domain": "example.org",
        "recipients": ["a@example.org", "b@example.org"],
    }
    values.update(fields)
    return message_pb2.DeliveryJob(**values)


DECISION = events_pb2.AdminDecision(decision_id="D1", actor="ops")


def test_a_job_event_names_the_message_the_job_and_its_attempt() -> None:
    event = job_events.job_event(make_job())
    assert (event.queue_id, event.message_id, event.job_id, event.attempt) == ("Q1", "<m1@example.com>", "Q1.1", 2)
    assert event_kind(event) == ""


def test_held_by_an_operator_or_for_a_reason_of_its_own() -> None:
    admin = job_events.held(make_job(), DECISION, release_to="route")
    assert (admin.held.reason, admin.held.release_to, admin.held.decision_id, admin.held.actor) == (
        "admin",
        "route",
        "D1",
        "ops",
    )
    poison = job_events.held(make_job(), reason="poison", release_to="deliver")
    assert (poison.held.reason, poison.held.release_to, poison.held.decision_id) == ("poison", "deliver", "")


def test_deleted_lists_the_recipients_the_stage_and_the_dsn() -> None:
    event = job_events.deleted(make_job(), DECISION, ["a@example.org"], dsn=True, stage="dns-resolver")
    body = event.deleted
    assert (body.stage, body.dsn_requested, list(body.recipients)) == ("dns-resolver", True, ["a@example.org"])
    assert (body.decision_id, body.actor) == ("D1", "ops")
    assert job_events.deleted(make_job(), None, [], dsn=False, stage="x").deleted.decision_id == ""


def test_a_duplicate_keeps_the_event_ids_and_names_the_first_queue_id() -> None:
    event = job_events.duplicate(job_events.job_event(make_job()))
    assert (event.duplicate.reason, event.duplicate.first_queue_id, event.job_id) == ("redelivered-input", "Q1", "Q1.1")
    again = job_events.duplicate(job_events.job_event(make_job()), reason="redelivered-job", recipients={"b@x": 1})
    assert (again.duplicate.reason, list(again.duplicate.recipients)) == ("redelivered-job", ["b@x"])


def test_the_deletion_result_fails_every_recipient_permanently_with_5_3_0() -> None:
    result = deletion_result(make_job(), "dns-resolver")
    assert result.reporter == "dns-resolver" and result.job == make_job() and result.HasField("attempted_at")
    assert [(r.recipient, r.outcome, r.smtp_code, r.status, r.diagnostic) for r in result.recipients] == [
        (rcpt, message_pb2.OUTCOME_PERMANENT, 0, DELETED_STATUS, DELETED_DIAGNOSTIC)
        for rcpt in ("a@example.org", "b@example.org")
    ]
    assert (DELETED_STATUS, DELETED_DIAGNOSTIC) == ("5.3.0", "deleted by the administrator")


@given(st.text(max_size=80), st.text(max_size=200), st.lists(st.text(max_size=60), max_size=5))
def test_hostile_ids_and_recipients_are_carried_as_given(queue_id: str, message_id: str, rcpts: list[str]) -> None:
    job = make_job(queue_id=queue_id, message_id=message_id, recipients=rcpts)
    event = job_events.deleted(job, None, job.recipients, dsn=False, stage="delivery-worker")
    parsed = events_pb2.LifecycleEvent.FromString(event.SerializeToString())
    assert (parsed.queue_id, parsed.message_id, list(parsed.deleted.recipients)) == (queue_id, message_id, rcpts)
    assert [r.recipient for r in deleted_result_list(job)] == rcpts


def deleted_result_list(job: message_pb2.DeliveryJob) -> list[message_pb2.RecipientResult]:
    return [deleted_result(rcpt) for rcpt in job.recipients]


@dataclass
class FakeDelivery:
    redelivered: bool = False
    headers: dict[str, Any] | None = field(default_factory=dict)


def test_a_redelivery_is_the_flag_or_a_positive_delivery_count() -> None:
    def delivery(**fields: Any) -> AbstractIncomingMessage:
        return cast(AbstractIncomingMessage, FakeDelivery(**fields))

    assert not is_redelivery(delivery())
    assert not is_redelivery(delivery(headers=None))
    assert not is_redelivery(delivery(headers={"x-delivery-count": "3"}))  # not a count
    assert not is_redelivery(delivery(headers={"x-delivery-count": 0}))
    assert is_redelivery(delivery(redelivered=True))
    assert is_redelivery(delivery(headers={"x-delivery-count": 1}))


def test_an_unanswered_duplicate_check_returns_the_message_a_bounded_number_of_times() -> None:
    def delivery(count: int) -> AbstractIncomingMessage:
        headers = {"x-delivery-count": count} if count else {}
        return cast(AbstractIncomingMessage, FakeDelivery(redelivered=True, headers=headers))

    for count in range(UNANSWERED_RETURNS + 1):
        with pytest.raises(TransientError, match="routed duplicate check got no answer"):
            return_if_unanswered(delivery(count), "routed")
    return_if_unanswered(delivery(UNANSWERED_RETURNS + 1), "routed")  # then the work goes on without the answer
    assert UNANSWERED_RETURNS < DELIVERY_LIMIT - 2  # room left before the queue sends it to held


def test_every_job_event_names_the_submitter_and_tags() -> None:
    job = make_job(submitter="apikey:billing", tags=["invoice", "eu"])
    event = job_events.held(job, release_to="route")
    assert event.submitter == "apikey:billing"
    assert list(event.tags) == ["invoice", "eu"]
