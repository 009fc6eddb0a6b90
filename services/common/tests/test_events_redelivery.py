"""already_recorded (events/redelivery.py): the question every stage asks the tracker about a repeated input."""

from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta_common.amqp.consumer import UNANSWERED_RETURNS
from kubemta_common.errors import TransientError
from kubemta_common.events.redelivery import already_recorded
from tests.harness.fake_tracker import FakeTracker


@dataclass
class FakeDelivery:
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


def delivery(*, redelivered: bool = False, count: int = 0) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, FakeDelivery(redelivered, {"x-delivery-count": count} if count else {}))


async def test_only_a_repeated_input_is_asked_about_and_by_its_job_or_message() -> None:
    tracker = FakeTracker(True)
    assert not await already_recorded(tracker, delivery(), "routed", job_id="Q1.a", attempt=0)
    assert not await already_recorded(None, delivery(redelivered=True), "routed", job_id="Q1.a", attempt=0)
    assert tracker.asked == []
    assert await already_recorded(tracker, delivery(redelivered=True), "routed", job_id="Q1.a", attempt=2)
    assert await already_recorded(tracker, None, "routed", flagged=True, job_id="Q1.b", attempt=0)
    assert await already_recorded(tracker, delivery(count=1), "queued", queue_id="Q2")
    assert len(tracker.asked) == 3


async def test_no_answer_returns_the_input_a_bounded_number_of_times_then_goes_on() -> None:
    tracker = FakeTracker(None)
    with pytest.raises(TransientError):
        await already_recorded(tracker, delivery(redelivered=True), "fate", job_id="Q1.a", attempt=0)
    late = delivery(redelivered=True, count=UNANSWERED_RETURNS + 1)
    assert not await already_recorded(tracker, late, "fate", job_id="Q1.a", attempt=0)
    assert not await already_recorded(tracker, None, "routed", flagged=True, job_id="Q1.a", attempt=0)  # no delivery
