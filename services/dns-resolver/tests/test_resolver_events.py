"""The resolver's lifecycle events and checks: `routed` recorded once the deliver publish was confirmed, a
redelivered job already routed acknowledged without publishing, and operators' DELETE and HOLD decisions before
routing."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.consumer import UNANSWERED_RETURNS
from kubemta_common.amqp.held import DECISION_ID, JOB_ID, QUEUE_ID, RELEASE_TO
from kubemta_common.amqp.topology import DELIVER, HELD, RESULTS, ROUTE
from kubemta_common.errors import PublishFailed, TransientError
from kubemta_common.events.decisions import Action
from kubemta_common.timestamps import now_timestamp, to_datetime
from kubemta_dns_resolver.checks import JobChecks
from kubemta_dns_resolver.handler import RouteHandler
from kubemta_dns_resolver.lifecycle import routed
from tests.harness.fake_events import RecordingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.fake_tracker import FakeDecisions, FakeTracker

ARRIVAL = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


class StaticRouter:
    """Routes every domain to one host (or fails, when given a failure)."""

    def __init__(self, route: Any) -> None:
        self.route_given = route
        self.asked: list[str] = []

    async def route(self, domain: str) -> Any:
        self.asked.append(domain)
        return self.route_given


@dataclass
class FakeDelivery:
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


def delivery(*, redelivered: bool = False, count: int = 0) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, FakeDelivery(redelivered, {"x-delivery-count": count} if count else {}))


def the_route() -> message_pb2.Route:
    return message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_SMTP,
        hosts=[
            message_pb2.RouteHost(hostname="mx1.example.org", address="192.0.2.1", port=25, preference=10),
            message_pb2.RouteHost(hostname="mx2.example.org", address="2001:db8::2", port=25, preference=20),
        ],
        provider="google",
        source="mx",
        tls_policy=message_pb2.TLS_POLICY_VERIFY,
        tls_policy_source="mta-sts enforce",
    )


def make_job(**fields: Any) -> message_pb2.DeliveryJob:
    job = message_pb2.DeliveryJob(
        queue_id="Q7",
        job_id="Q7.1",
        sender="alice@example.com",
        domain="example.org",
        recipients=["a@example.org", "b@example.org"],
        content=b"Subject: hi\r\n\r\nhello\r\n",
        attempts=1,
        message_id="<m7@example.com>",
        **fields,
    )
    job.arrival_time.FromDatetime(ARRIVAL)
    return job


def duplicates() -> float:
    return REGISTRY.get_sample_value("kubemta_duplicates_total", {"stage": "dns-resolver"}) or 0.0


def handler(publisher: FakePublisher, events: RecordingEvents, *, checks: JobChecks | None = None, route: Any = None):
    return RouteHandler(StaticRouter(route or the_route()), publisher, events=events, checks=checks)


async def test_routed_is_recorded_after_the_deliver_publish() -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    published_at: list[Timestamp] = []
    publish = publisher.publish

    async def timed_publish(*args: Any, **kwargs: Any) -> None:
        published_at.append(now_timestamp())
        await publish(*args, **kwargs)

    publisher.publish = timed_publish  # type: ignore[method-assign]
    await handler(publisher, events).handle(make_job())
    # its time is taken before the publish: a worker may record its attempt before the confirm comes back
    assert events.events[0].time.ToNanoseconds() <= published_at[0].ToNanoseconds()
    assert [sent.routing_key for sent in publisher.published] == [DELIVER]
    assert events.kinds() == ["routed"] and events.record_calls == 1
    (event,) = events.events
    assert (event.queue_id, event.job_id, event.message_id, event.attempt) == ("Q7", "Q7.1", "<m7@example.com>", 1)
    body = event.routed
    assert (body.domain, body.kind, body.source, body.provider) == (
        "example.org",
        message_pb2.TRANSPORT_KIND_SMTP,
        "mx",
        "google",
    )
    assert list(body.hosts) == ["mx1.example.org[192.0.2.1]:25", "mx2.example.org[2001:db8::2]:25"]
    assert (body.tls_policy, body.tls_policy_source) == (message_pb2.TLS_POLICY_VERIFY, "mta-sts enforce")


def test_a_unix_socket_hop_is_named_by_its_path() -> None:
    route = message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_LMTP, hosts=[message_pb2.RouteHost(unix_socket="/run/dovecot/lmtp")]
    )
    assert list(routed(make_job(), route).routed.hosts) == ["/run/dovecot/lmtp"]


async def test_a_failed_deliver_publish_records_nothing() -> None:
    publisher, events = FakePublisher(PublishFailed("no confirm")), RecordingEvents()
    with pytest.raises(PublishFailed):
        await handler(publisher, events).handle(make_job())
    assert events.events == []


async def test_a_stream_outage_does_not_hold_up_the_job() -> None:
    publisher, events = FakePublisher(), RecordingEvents(recorded=False)
    await handler(publisher, events).handle(make_job())
    assert [sent.routing_key for sent in publisher.published] == [DELIVER]


async def test_a_route_failure_writes_no_event(fake_dns) -> None:
    from kubemta_dns_resolver.router import RouteFailure

    failure = RouteFailure(temporary=True, status="4.4.3", diagnostic="SERVFAIL", source="mx")
    publisher, events = FakePublisher(), RecordingEvents()
    await handler(publisher, events, route=failure).handle(make_job())
    assert [sent.routing_key for sent in publisher.published] == [RESULTS]
    assert events.events == []


@pytest.mark.parametrize("redelivery", [{"redelivered": True}, {"count": 2}])
async def test_a_redelivered_job_already_routed_is_not_published_again(redelivery) -> None:
    publisher, events, tracker = FakePublisher(), RecordingEvents(), FakeTracker(True)
    before = duplicates()
    await handler(publisher, events, checks=JobChecks(tracker)).handle(make_job(), delivery(**redelivery))
    assert publisher.published == [] and publisher.raw == []
    assert tracker.asked == [("routed", "", "Q7.1", 1)]
    (event,) = events.events
    assert event.duplicate.reason == "redelivered-input" and event.job_id == "Q7.1"
    assert duplicates() == before + 1


@pytest.mark.parametrize("answer", [False, None])
async def test_a_redelivered_job_not_known_as_routed_is_routed(answer) -> None:
    """No answer (None) is routed too, once the job came back more than UNANSWERED_RETURNS times."""
    publisher, events, tracker = FakePublisher(), RecordingEvents(), FakeTracker(answer)
    count = UNANSWERED_RETURNS + 1 if answer is None else 0
    await handler(publisher, events, checks=JobChecks(tracker)).handle(
        make_job(), delivery(redelivered=True, count=count)
    )
    assert [sent.routing_key for sent in publisher.published] == [DELIVER]
    assert events.kinds() == ["routed"]


async def test_a_redelivered_job_whose_check_got_no_answer_goes_back_to_be_asked_again() -> None:
    publisher, events, tracker = FakePublisher(), RecordingEvents(), FakeTracker(None)
    for count in range(UNANSWERED_RETURNS + 1):
        with pytest.raises(TransientError):
            await handler(publisher, events, checks=JobChecks(tracker)).handle(
                make_job(), delivery(redelivered=True, count=count)
            )
    assert publisher.published == [] and events.events == []


async def test_a_job_flagged_as_a_possible_copy_is_checked_like_a_redelivery() -> None:
    """The queue-manager handled its inbound message twice: the second copy of the job is dropped once the first was
    routed, and a job routed from a flagged or redelivered input stays flagged for the worker."""
    publisher, events, tracker = FakePublisher(), RecordingEvents(), FakeTracker(True)
    await handler(publisher, events, checks=JobChecks(tracker)).handle(make_job(maybe_duplicate=True), delivery())
    assert publisher.published == [] and events.kinds() == ["duplicate"]
    for job, came_in in ((make_job(maybe_duplicate=True), delivery()), (make_job(), delivery(redelivered=True))):
        publisher, events = FakePublisher(), RecordingEvents()
        await handler(publisher, events, checks=JobChecks(FakeTracker(False))).handle(job, came_in)
        (sent,) = publisher.published
        assert message_pb2.DeliveryJob.FromString(sent.body).maybe_duplicate
    publisher = FakePublisher()
    await handler(publisher, RecordingEvents(), checks=JobChecks(FakeTracker(True))).handle(make_job(), delivery())
    (sent,) = publisher.published  # a first delivery of an unflagged job: not asked, not flagged
    assert not message_pb2.DeliveryJob.FromString(sent.body).maybe_duplicate


async def test_a_first_delivery_does_not_ask_the_tracker() -> None:
    publisher, events, tracker = FakePublisher(), RecordingEvents(), FakeTracker(True)
    await handler(publisher, events, checks=JobChecks(tracker)).handle(make_job(), delivery())
    assert tracker.asked == []
    assert [sent.routing_key for sent in publisher.published] == [DELIVER]


async def test_a_deleted_job_is_dropped_before_routing() -> None:
    publisher, events, decisions = FakePublisher(), RecordingEvents(), FakeDecisions.deciding(Action.DELETE)
    router = StaticRouter(the_route())
    job = make_job()
    await RouteHandler(router, publisher, events=events, checks=JobChecks(decisions=decisions)).handle(job)
    assert publisher.published == publisher.raw == [] and router.asked == []
    assert decisions.asked == [
        {"queue_id": "Q7", "sender": "alice@example.com", "domain": "example.org", "arrival": ARRIVAL}
    ]
    (event,) = events.events
    deleted = event.deleted
    assert (deleted.stage, deleted.decision_id, deleted.actor, deleted.dsn_requested) == (
        "dns-resolver",
        "D1",
        "ops",
        False,
    )
    assert list(deleted.recipients) == ["a@example.org", "b@example.org"]


async def test_a_job_deleted_with_a_dsn_is_reported_failed_for_the_queue_manager_to_bounce() -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    checks = JobChecks(decisions=FakeDecisions.deciding(Action.DELETE, dsn=True))
    await handler(publisher, events, checks=checks).handle(make_job())
    ((key, body, message_id, kind),) = [
        (p.routing_key, p.body, p.message_id, p.message_type) for p in publisher.published
    ]
    assert (key, message_id, kind) == (RESULTS, "Q7.1", "kubemta.v1.DeliveryResult")
    result = message_pb2.DeliveryResult.FromString(body)
    assert [(r.recipient, r.outcome, r.status, r.diagnostic) for r in result.recipients] == [
        (rcpt, message_pb2.OUTCOME_PERMANENT, "5.3.0", "deleted by the administrator")
        for rcpt in ("a@example.org", "b@example.org")
    ]
    assert result.reporter == "dns-resolver"
    assert events.kinds() == ["deleted"] and events.events[0].deleted.dsn_requested


async def test_a_held_job_goes_to_held_with_the_release_headers() -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    job = make_job()
    await handler(publisher, events, checks=JobChecks(decisions=FakeDecisions.deciding(Action.HOLD))).handle(job)
    assert publisher.published == []
    ((key, body, message_id, kind, headers),) = [
        (p.routing_key, p.body, p.message_id, p.message_type, p.headers) for p in publisher.raw
    ]
    assert (key, message_id, kind) == (HELD, "Q7.1", "kubemta.v1.DeliveryJob")
    assert message_pb2.DeliveryJob.FromString(body) == job
    assert headers == {RELEASE_TO: ROUTE, QUEUE_ID: "Q7", JOB_ID: "Q7.1", DECISION_ID: "D1"}
    (event,) = events.events
    assert (event.held.reason, event.held.release_to, event.held.decision_id, event.held.actor) == (
        "admin",
        ROUTE,
        "D1",
        "ops",
    )


async def test_a_hold_not_confirmed_records_nothing() -> None:
    publisher, events = FakePublisher(PublishFailed("no confirm")), RecordingEvents()
    with pytest.raises(PublishFailed):
        await handler(publisher, events, checks=JobChecks(decisions=FakeDecisions.deciding(Action.HOLD))).handle(
            make_job()
        )
    assert events.events == []


async def test_a_release_routes_as_usual() -> None:
    publisher, events = FakePublisher(), RecordingEvents()
    await handler(publisher, events, checks=JobChecks(decisions=FakeDecisions.deciding(Action.NONE))).handle(make_job())
    assert [sent.routing_key for sent in publisher.published] == [DELIVER]


@given(
    queue_id=st.text(max_size=40),
    message_id=st.text(max_size=200),
    recipients=st.lists(st.text(max_size=80), max_size=5),
)
@settings(max_examples=50)
def test_hostile_ids_and_recipients_are_carried_verbatim(queue_id, message_id, recipients) -> None:
    job = make_job()
    job.queue_id, job.message_id = queue_id, message_id
    job.recipients[:] = recipients
    event = routed(job, the_route())
    assert (event.queue_id, event.message_id) == (queue_id, message_id)
    assert events_pb2.LifecycleEvent.FromString(event.SerializeToString()) == event
    assert to_datetime(job.arrival_time) == ARRIVAL
