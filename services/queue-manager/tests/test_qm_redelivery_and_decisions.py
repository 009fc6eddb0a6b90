"""A redelivered input already handled is acknowledged without publishing again; operators' DELETE and HOLD
decisions on a delivery result."""

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.amqp.consumer import UNANSWERED_RETURNS
from kubemta_common.amqp.held import DECISION_ID, JOB_ID, QUEUE_ID, RELEASE_TO
from kubemta_common.amqp.topology import DSN, HELD, ROUTE
from kubemta_common.errors import PublishFailed, TransientError
from kubemta_common.events.decisions import Action
from kubemta_common.timestamps import to_datetime


def duplicates() -> float:
    return REGISTRY.get_sample_value("kubemta_duplicates_total", {"stage": "queue-manager"}) or 0.0


def accepted() -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage(
        queue_id="QACC",
        sender="alice@example.com",
        recipients=["bob@example.org"],
        content=b"Subject: hi\r\n\r\nhello\r\n",
        message_id="<m1@example.com>",
    )


@pytest.mark.parametrize("delivery", [{"redelivered": True}, {"count": 1}, {"redelivered": True, "count": 3}])
async def test_a_redelivered_message_recorded_as_queued_is_not_queued_again(
    kit, manager, publisher, events, tracker, delivery
) -> None:
    tracker.answers[("queued", "QACC", "", None)] = True
    before = duplicates()
    await manager.handle_accepted(accepted(), kit.delivery(**delivery))
    assert publisher.published == []
    (duplicate,) = events.events
    assert duplicate.WhichOneof("kind") == "duplicate"
    assert (duplicate.queue_id, duplicate.message_id) == ("QACC", "<m1@example.com>")
    assert duplicate.duplicate.reason == "redelivered-input"
    assert duplicates() == before + 1


@pytest.mark.parametrize("answer", [False, None])
async def test_a_redelivered_message_not_known_as_queued_is_queued(
    kit, manager, publisher, events, tracker, answer
) -> None:
    tracker.answers[("queued", "QACC", "", None)] = answer
    count = UNANSWERED_RETURNS + 1 if answer is None else 0  # no answer: handled once it came back often enough
    await manager.handle_accepted(accepted(), kit.delivery(redelivered=True, count=count))
    assert len(publisher.to(ROUTE)) == 1
    assert events.kinds() == ["queued"]
    # its jobs may be out already (published, then the crash came before the record): the resolver checks them
    (job,) = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert job.maybe_duplicate


async def test_jobs_of_a_first_delivery_are_not_flagged(kit, manager, publisher) -> None:
    await manager.handle_accepted(accepted(), kit.delivery())
    (job,) = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert not job.maybe_duplicate


@pytest.mark.parametrize(("redelivered", "flagged"), [(False, False), (True, True)])
async def test_a_retry_job_is_flagged_only_after_a_redelivered_result(
    kit, manager, publisher, tracker, redelivered, flagged
) -> None:
    job = kit.job(["bob@example.org"], attempts=1)
    job.maybe_duplicate = True  # the attempt before was a possible copy; the retry is a fresh attempt
    tracker.answers[("fate", "", job.job_id, 1)] = False
    await manager.handle_result(
        kit.result(job, [kit.deferred("bob@example.org")]), kit.delivery(redelivered=redelivered)
    )
    ((_, body, _, _),) = publisher.published
    assert message_pb2.DeliveryJob.FromString(body).maybe_duplicate is flagged


async def test_a_redelivered_message_whose_check_got_no_answer_goes_back_to_be_asked_again(
    kit, manager, publisher, events, tracker
) -> None:
    tracker.answers[("queued", "QACC", "", None)] = None
    for count in range(UNANSWERED_RETURNS + 1):
        with pytest.raises(TransientError):
            await manager.handle_accepted(accepted(), kit.delivery(redelivered=True, count=count))
    assert publisher.published == [] and events.events == []


async def test_a_first_delivery_does_not_ask_the_tracker(kit, manager, publisher, tracker) -> None:
    tracker.answers[("queued", "QACC", "", None)] = True
    await manager.handle_accepted(accepted(), kit.delivery())
    await manager.handle_accepted(accepted())
    assert tracker.asked == []
    assert len(publisher.to(ROUTE)) == 2


async def test_without_a_tracker_a_redelivery_is_handled_again(kit, publisher, events) -> None:
    from kubemta_queue_manager.handlers import QueueManager

    manager = QueueManager(kit.settings(), publisher, events=events, clock=lambda: kit.NOW)
    await manager.handle_accepted(accepted(), kit.delivery(redelivered=True))
    assert len(publisher.to(ROUTE)) == 1


async def test_a_redelivered_result_whose_fate_was_recorded_is_not_handled_again(
    kit, manager, publisher, events, tracker
) -> None:
    job = kit.job(["bob@example.org"], attempts=3)
    tracker.answers[("fate", "", "QID1.1", 3)] = True
    tracker.answers[("fate", "", "QID1.1", 4)] = False
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]), kit.delivery(count=2))
    assert publisher.published == []
    assert events.kinds() == ["duplicate"]
    assert (events.events[0].job_id, events.events[0].attempt) == ("QID1.1", 3)


async def test_a_redelivered_result_of_another_attempt_is_handled(kit, manager, publisher, tracker) -> None:
    job = kit.job(["bob@example.org"], attempts=4)
    tracker.answers[("fate", "", "QID1.1", 3)] = True
    tracker.answers[("fate", "", "QID1.1", 4)] = False
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]), kit.delivery(redelivered=True))
    assert tracker.asked == [("fate", "", "QID1.1", 4)]
    assert len(publisher.published) == 1


async def test_a_deleted_message_is_neither_retried_nor_bounced(kit, manager, publisher, events, decisions) -> None:
    decisions.decide(Action.DELETE)
    job = kit.job(["bob@example.org", "carol@example.org", "dave@example.org"], sender="Alice@Example.com")
    job.message_id = "<m1@example.com>"
    result = kit.result(
        job, [kit.delivered("bob@example.org"), kit.deferred("carol@example.org"), kit.bounced("dave@example.org")]
    )
    await manager.handle_result(result)
    assert publisher.published == []
    assert events.kinds() == ["deleted", "delivered"]
    deleted = events.events[0].deleted
    assert (deleted.stage, deleted.decision_id, deleted.actor, deleted.dsn_requested) == (
        "queue-manager",
        "D1",
        "ops",
        False,
    )
    assert list(deleted.recipients) == ["carol@example.org", "dave@example.org"]
    (asked,) = decisions.asked
    assert asked == {
        "queue_id": "QID1",
        "sender": "Alice@Example.com",
        "domain": "example.org",
        "arrival": to_datetime(job.arrival_time),
    }


async def test_a_message_deleted_with_a_dsn_bounces_what_would_be_retried(
    kit, manager, publisher, events, decisions
) -> None:
    decisions.decide(Action.DELETE, dsn=True)
    job = kit.job(["carol@example.org", "dave@example.org"])
    await manager.handle_result(kit.result(job, [kit.deferred("carol@example.org"), kit.bounced("dave@example.org")]))
    assert [key for key, _, _, _ in publisher.published] == [DSN]
    (request,) = kit.dsn_requests(publisher)
    assert [(r.recipient, r.status, r.diagnostic) for r in request.recipients] == [
        ("carol@example.org", "5.3.0", "deleted by the administrator"),
        ("dave@example.org", "5.1.1", kit.bounced("dave@example.org").diagnostic),
    ]
    assert events.kinds() == ["deleted", "bounced"]
    assert events.events[0].deleted.dsn_requested
    assert list(events.events[0].deleted.recipients) == ["carol@example.org"]
    assert events.events[1].bounced.dsn_requested


async def test_a_delivered_result_of_a_deleted_message_is_just_delivered(
    kit, manager, publisher, events, decisions
) -> None:
    decisions.decide(Action.DELETE)
    await manager.handle_result(kit.result(kit.job(["bob@example.org"]), [kit.delivered("bob@example.org")]))
    assert events.kinds() == ["delivered"]
    assert publisher.published == []


async def test_a_held_message_goes_to_held_instead_of_its_retry_queue(
    kit, manager, publisher, events, decisions
) -> None:
    decisions.decide(Action.HOLD, decision_id="DHOLD")
    job = kit.job(["bob@example.org", "carol@example.org"], attempts=1)
    await manager.handle_result(kit.result(job, [kit.delivered("bob@example.org"), kit.deferred("carol@example.org")]))
    ((key, body, message_id, kind),) = publisher.published
    assert (key, message_id, kind) == (HELD, "QID1.1", "kubemta.v1.DeliveryJob")
    held = message_pb2.DeliveryJob.FromString(body)
    assert list(held.recipients) == ["carol@example.org"] and held.attempts == 2
    assert publisher.headers["QID1.1"] == {
        RELEASE_TO: ROUTE,
        QUEUE_ID: "QID1",
        JOB_ID: "QID1.1",
        DECISION_ID: "DHOLD",
    }
    assert events.kinds() == ["held", "delivered", "deferred"]
    held_event = events.events[0]
    assert (held_event.held.reason, held_event.held.release_to, held_event.held.decision_id) == (
        "admin",
        ROUTE,
        "DHOLD",
    )
    assert events.events[2].deferred.retry_queue == HELD
    assert not events.events[2].deferred.HasField("next_attempt")


async def test_a_hold_does_not_stop_a_bounce(kit, manager, publisher, events, decisions) -> None:
    decisions.decide(Action.HOLD)
    await manager.handle_result(kit.result(kit.job(["bob@example.org"]), [kit.bounced("bob@example.org")]))
    assert [key for key, _, _, _ in publisher.published] == [DSN]
    assert events.kinds() == ["bounced"]


async def test_a_hold_not_confirmed_records_nothing(kit, manager, publisher, events, decisions) -> None:
    decisions.decide(Action.HOLD)
    publisher.fail = True
    with pytest.raises(PublishFailed):
        await manager.handle_result(kit.result(kit.job(["bob@example.org"]), [kit.deferred("bob@example.org")]))
    assert events.events == []


async def test_a_held_delay_warning_is_still_sent(kit, manager, publisher, decisions) -> None:
    decisions.decide(Action.HOLD)
    job = kit.job(["bob@example.org"], age=timedelta(hours=5))
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))
    assert sorted(key for key, _, _, _ in publisher.published) == [DSN, HELD]
