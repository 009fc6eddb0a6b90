"""First-attempt jobs go straight to `deliver` while the resolver's route answer for their domain is fresh;
every other job (stale or no answer, a possible duplicate, an operator's decision, the setting off) goes to
`route`. The `routed` event the resolver would have written is recorded after the job was confirmed."""

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import DELIVER, ROUTE
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import Action
from kubemta_common.events.stream_reader import StreamRecord
from kubemta_common.route_answers import RouteAnswers, answer_record
from kubemta_common.route_shortcut import RouteAnswerFollower, RouteShortcut
from kubemta_queue_manager.handlers import QueueManager
from tests.harness.route_answers_kit import fresh_answers, sample_route


def answers_metric(result: str) -> float:
    return REGISTRY.get_sample_value("kubemta_route_answers_total", {"result": result}) or 0.0


def accepted(*recipients: str) -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage(
        queue_id="QSC",
        sender="alice@example.com",
        recipients=list(recipients) or ["bob@example.org"],
        content=b"Subject: hi\r\n\r\nhello\r\n",
        message_id="<m1@example.com>",
    )


def manager_with(kit, publisher, events, decisions, answers: RouteAnswers, **settings) -> QueueManager:
    return QueueManager(kit.settings(**settings), publisher, events=events, decisions=decisions, route_answers=answers)


def jobs_to(publisher, queue: str) -> list[message_pb2.DeliveryJob]:
    return [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(queue)]


async def test_a_job_with_a_fresh_answer_goes_straight_to_deliver_with_the_route(
    kit, publisher, events, decisions
) -> None:
    used = answers_metric("used")
    manager = manager_with(kit, publisher, events, decisions, fresh_answers("example.org"))
    await manager.handle_accepted(accepted("bob@example.org", "carol@example.net"))
    (direct,) = jobs_to(publisher, DELIVER)
    (routed_later,) = jobs_to(publisher, ROUTE)
    assert direct.domain == "example.org" and routed_later.domain == "example.net"
    assert sorted(host.address for host in direct.route.hosts) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert direct.attempts == 0 and not direct.maybe_duplicate
    assert not routed_later.HasField("route")
    assert events.kinds() == ["queued", "routed"]
    (routed,) = events.of_kind("routed")
    assert (routed.job_id, routed.routed.domain, routed.routed.source) == (direct.job_id, "example.org", "mx")
    assert answers_metric("used") == used + 1


async def test_equal_preference_hosts_are_drawn_afresh_per_job(kit, publisher, events, decisions) -> None:
    manager = manager_with(kit, publisher, events, decisions, fresh_answers("example.org"))
    for _ in range(30):
        await manager.handle_accepted(accepted("bob@example.org"))
    orders = {tuple(host.hostname for host in job.route.hosts) for job in jobs_to(publisher, DELIVER)}
    assert len(orders) > 1


async def test_a_stale_or_missing_answer_sends_the_job_to_route(kit, publisher, events, decisions) -> None:
    stale, missing = answers_metric("stale"), answers_metric("missing")
    answers = fresh_answers("example.org", fresh_for=10, resolved=time.time() - 60)
    manager = manager_with(kit, publisher, events, decisions, answers)
    await manager.handle_accepted(accepted("bob@example.org", "carol@example.net"))
    assert len(jobs_to(publisher, ROUTE)) == 2 and publisher.to(DELIVER) == []
    assert events.kinds() == ["queued"]
    assert (answers_metric("stale"), answers_metric("missing")) == (stale + 1, missing + 1)


async def test_the_setting_off_sends_every_job_to_route(kit, publisher, events, decisions) -> None:
    manager = manager_with(kit, publisher, events, decisions, fresh_answers("example.org"), route_shortcut=False)
    await manager.handle_accepted(accepted("bob@example.org"))
    assert len(jobs_to(publisher, ROUTE)) == 1 and publisher.to(DELIVER) == []


async def test_a_possible_duplicate_goes_through_the_resolver(kit, publisher, events, decisions, tracker) -> None:
    tracker.answers[("queued", "QSC", "", None)] = False
    manager = QueueManager(
        kit.settings(),
        publisher,
        events=events,
        tracker=tracker,
        decisions=decisions,
        route_answers=fresh_answers("example.org"),
    )
    await manager.handle_accepted(accepted("bob@example.org"), kit.delivery(redelivered=True))
    (job,) = jobs_to(publisher, ROUTE)
    assert job.maybe_duplicate and publisher.to(DELIVER) == []


@pytest.mark.parametrize("action", [Action.HOLD, Action.DELETE])
async def test_a_job_under_an_operators_decision_goes_through_the_resolver(
    kit, publisher, events, decisions, action
) -> None:
    decisions.decide(action)
    manager = manager_with(kit, publisher, events, decisions, fresh_answers("example.org"))
    decided, used = answers_metric("decided"), answers_metric("used")
    await manager.handle_accepted(accepted("bob@example.org"))
    assert len(jobs_to(publisher, ROUTE)) == 1 and publisher.to(DELIVER) == []
    assert (answers_metric("decided") - decided, answers_metric("used") - used) == (1, 0)


async def test_retries_and_flagged_jobs_are_never_shortcut(decisions) -> None:
    shortcut = RouteShortcut(fresh_answers("example.org"), JobVerdicts(decisions))
    retry = message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", domain="example.org", attempts=1)
    flagged = message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", domain="example.org", maybe_duplicate=True)
    first = message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", domain="example.org")
    assert not await shortcut.attach(retry)
    assert not await shortcut.attach(flagged)
    assert await shortcut.attach(first)


async def test_no_shortcut_before_the_decisions_were_read(decisions) -> None:
    ready = asyncio.Event()
    shortcut = RouteShortcut(fresh_answers("example.org"), JobVerdicts(decisions, ready), decisions_ready=ready)
    job = message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", domain="example.org")
    waiting, used = answers_metric("waiting"), answers_metric("used")
    assert not await shortcut.attach(job)
    assert (answers_metric("waiting") - waiting, answers_metric("used") - used) == (1, 0)  # counted as waiting
    ready.set()
    assert await shortcut.attach(job)
    assert (answers_metric("waiting") - waiting, answers_metric("used") - used) == (1, 1)


async def test_a_deliver_publish_not_confirmed_records_no_routed_event(kit, publisher, events, decisions) -> None:
    publisher.fail = True
    manager = manager_with(kit, publisher, events, decisions, fresh_answers("example.org"))
    with pytest.raises(Exception):  # noqa: B017 - PublishFailed: the input goes back to its queue
        await manager.handle_accepted(accepted("bob@example.org"))
    assert events.of_kind("routed") == []


async def test_the_follower_ignores_garbage_and_keeps_reading(caplog: pytest.LogCaptureFixture) -> None:
    answers = RouteAnswers()
    follower = RouteAnswerFollower.__new__(RouteAnswerFollower)  # no broker: only the record handler
    follower.answers = answers
    follower._clock = time.time
    good = answer_record("example.org", sample_route(), now=time.time(), fresh_for=60).SerializeToString()
    empty = answer_record("", sample_route(), now=time.time(), fresh_for=60).SerializeToString()
    records = [StreamRecord(n, body, None) for n, body in enumerate([b"\x00\xff garbage", empty, good])]
    with caplog.at_level(logging.WARNING):
        await follower._handle(records)
    assert answers.lookup("example.org", time.time())[1] == "used"
    assert len(answers) == 1
    assert (
        len([r for r in caplog.records if "route answer" in r.getMessage() or "routes stream" in r.getMessage()]) == 2
    )
