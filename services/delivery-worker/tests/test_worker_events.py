"""The worker's lifecycle events, redelivery guard and admin decisions, against real SMTP peers on loopback
with recording events (tests/harness/fake_events.py), a fake tracker and a fake decisions view."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import UNANSWERED_RETURNS, subscribe_deliveries
from kubemta_common.amqp.held import DECISION_ID, JOB_ID, QUEUE_ID, RELEASE_TO
from kubemta_common.amqp.topology import HELD, RESULTS
from kubemta_common.errors import PermanentError, TransientError
from kubemta_common.events.decisions import Action, Decisions
from kubemta_common.events.deletion import DELETED_DIAGNOSTIC
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.journal import DeliveryJournal
from tests.harness.fake_events import PublishCountingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.fake_tracker import FakeDecisions, FakeTracker


def incoming(body: bytes, *, redelivered: bool = False, returned: int = 0) -> AbstractIncomingMessage:
    """A delivery of `body` from `deliver` (`returned`: its x-delivery-count header, when above 0)."""
    headers = {"x-delivery-count": returned} if returned else {}
    message = SimpleNamespace(body=body, message_id="m1", headers=headers, redelivered=redelivered)
    message.routing_key = "deliver"
    return cast(AbstractIncomingMessage, message)


def delivered(recipient: str, remote_mta: str = "mx1.dest.test") -> events_pb2.RecipientOutcome:
    return events_pb2.RecipientOutcome(
        recipient=recipient,
        outcome=message_pb2.OUTCOME_DELIVERED,
        smtp_code=250,
        status="2.0.0",
        diagnostic="250 2.0.0 Ok: queued as FIRST",
        remote_mta=remote_mta,
    )


@pytest.fixture
def parts():
    publisher = FakePublisher()
    return publisher, PublishCountingEvents(publisher, service="delivery-worker")


def handle(handler: DeliverHandler):
    return subscribe_deliveries(stages.DELIVER, handler).on_delivery


def result_of(publisher: FakePublisher) -> message_pb2.DeliveryResult:
    [published] = publisher.published
    assert published.routing_key == RESULTS
    return message_pb2.DeliveryResult.FromString(published.body)


async def test_attempted_is_recorded_before_the_result_with_host_and_outcomes(start_peer, host_of, job, options, parts):
    publisher, events = parts
    peer = await start_peer(rules={"gone": "550 5.1.1 No such user"})
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "gone@dest.test"], attempts=3)
    the_job.message_id = "<m1@sender.test>"
    handler = DeliverHandler(Deliverer(options), publisher, events=events)

    await handle(handler)(incoming(the_job.SerializeToString()))

    assert events.kinds() == ["attempted"]
    assert events.published_at_record == [0]  # recorded before the result was published
    event = events.events[0]
    assert (event.queue_id, event.job_id, event.message_id, event.attempt) == (
        "Q123TEST",
        "Q123TEST.dest.test",
        "<m1@sender.test>",
        3,
    )
    attempted = event.attempted
    assert attempted.domain == "dest.test"
    assert (attempted.host, attempted.address, attempted.port) == ("mx1.dest.test", peer.address, peer.port)
    assert attempted.tls_version == "" and attempted.tls_cipher == ""
    assert attempted.duration > 0
    outcomes = {r.recipient: (r.outcome, r.smtp_code, r.status) for r in attempted.recipients}
    assert outcomes == {
        "a@dest.test": (message_pb2.OUTCOME_DELIVERED, 250, "2.0.0"),
        "gone@dest.test": (message_pb2.OUTCOME_PERMANENT, 550, "5.1.1"),
    }
    assert len(result_of(publisher).recipients) == 2


async def test_attempted_names_the_tls_version_and_cipher(start_peer, host_of, job, options, parts, tls_cert):
    publisher, events = parts
    peer = await start_peer(tls_cert=tls_cert)
    the_job = job([host_of("mx1.dest.test", peer)])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events))(incoming(the_job.SerializeToString()))
    attempted = events.events[0].attempted
    assert attempted.tls_version.startswith("TLSv1")
    assert attempted.tls_cipher


async def test_attempted_after_a_refused_host_names_no_answer(refused_host, job, options, parts):
    publisher, events = parts
    the_job = job([refused_host("mx1.dest.test")])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events))(incoming(the_job.SerializeToString()))
    [event] = events.events
    assert event.attempted.recipients[0].outcome == message_pb2.OUTCOME_TEMPORARY
    assert result_of(publisher).recipients[0].outcome == message_pb2.OUTCOME_TEMPORARY


async def test_an_unconfirmed_attempt_event_still_publishes_the_result(start_peer, host_of, job, options, parts):
    publisher, events = parts
    events.recorded = False
    peer = await start_peer(rules={"later": "450 4.2.0 try again later"})
    the_job = job([host_of("mx1.dest.test", peer)], ["later@dest.test"])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events))(incoming(the_job.SerializeToString()))
    assert result_of(publisher).recipients[0].outcome == message_pb2.OUTCOME_TEMPORARY


async def test_unconfirmed_events_still_end_a_delivered_job(start_peer, host_of, job, options, parts):
    """The stream lags: the `delivered` event waits in the buffer, the job ends at the worker all the same."""
    publisher, events = parts
    events.recorded = False
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events))(incoming(the_job.SerializeToString()))
    assert publisher.published == [] and events.kinds() == ["attempted", "delivered"]


async def test_a_redelivered_job_is_not_sent_again_to_recipients_recorded_as_delivered(
    start_peer, host_of, job, options, parts, metric
):
    publisher, events = parts
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test", "c@dest.test"])
    tracker = FakeTracker(delivered=[delivered("a@dest.test"), delivered("c@dest.test")])
    before = metric("kubemta_duplicates_total", stage="delivery-worker")
    handler = DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker)

    await handle(handler)(incoming(the_job.SerializeToString(), redelivered=True))

    [message] = await peer.wait_for_messages(1)
    assert message.rcpt_tos == ["b@dest.test"]
    assert tracker.asked == ["Q123TEST.dest.test"]
    assert publisher.published == []  # every recipient delivered: the job ends at the worker
    assert events.kinds() == ["duplicate", "attempted", "delivered"]
    fate = events.events[2].delivered
    assert [r.recipient for r in fate.recipients] == ["a@dest.test", "b@dest.test", "c@dest.test"]
    assert all(r.outcome == message_pb2.OUTCOME_DELIVERED for r in fate.recipients)
    assert fate.recipients[0].diagnostic == "250 2.0.0 Ok: queued as FIRST"
    duplicate = events.events[0].duplicate
    assert duplicate.reason == "redelivered-job" and list(duplicate.recipients) == ["a@dest.test", "c@dest.test"]
    assert [r.recipient for r in events.events[1].attempted.recipients] == ["b@dest.test"]
    assert metric("kubemta_duplicates_total", stage="delivery-worker") == before + 1


async def test_a_job_flagged_as_a_possible_copy_is_checked_although_it_is_a_first_delivery(
    start_peer, host_of, job, options, parts
):
    """The resolver routed this job again after a crash (DeliveryJob.maybe_duplicate): the first copy may have been
    delivered already, so the tracker is asked as for a redelivery."""
    publisher, events = parts
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"])
    the_job.maybe_duplicate = True
    tracker = FakeTracker(delivered=[delivered("a@dest.test")])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker))(
        incoming(the_job.SerializeToString())
    )
    [message] = await peer.wait_for_messages(1)
    assert message.rcpt_tos == ["b@dest.test"] and tracker.asked == ["Q123TEST.dest.test"]
    unflagged = FakeTracker(delivered=[delivered("a@dest.test")])
    the_job.maybe_duplicate = False
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, tracker=unflagged))(
        incoming(the_job.SerializeToString())
    )
    assert unflagged.asked == []  # a first delivery of an unflagged job costs no question


async def test_the_journal_of_a_killed_worker_stops_a_second_sending_without_asking_the_tracker(
    start_peer, host_of, job, options, parts, tmp_path
):
    """The first delivery wrote its delivered recipients to the journal in the iteration that read the reply; the
    worker died before its attempted event was confirmed; the restarted one gets the job back and finds them."""
    publisher, events = parts
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"])
    first = DeliverHandler(Deliverer(options), publisher, events=events, journal=DeliveryJournal(tmp_path / "j"))
    await handle(first)(incoming(the_job.SerializeToString()))
    await peer.wait_for_messages(1)
    publisher.published.clear()  # the first result: published, but say the worker died before it was confirmed
    tracker = FakeTracker(delivered=[])  # the stream never got the attempt
    restarted = DeliverHandler(
        Deliverer(options), publisher, events=events, tracker=tracker, journal=DeliveryJournal(tmp_path / "j")
    )
    await handle(restarted)(incoming(the_job.SerializeToString(), redelivered=True, returned=1))
    assert len(peer.messages) == 1  # not sent again
    # the journal knew every recipient (no delivered_recipients question); was the job's fate recorded before?
    assert tracker.asked == [("fate", "", "Q123TEST.dest.test", 2)]
    assert publisher.published == []  # the tracker did not know it: the job ends here, with its delivered event
    [fate] = events.of_kind("delivered")[1:]
    assert [r.outcome for r in fate.delivered.recipients] == [message_pb2.OUTCOME_DELIVERED] * 2


async def test_every_recipient_delivered_before_ends_the_job_without_connecting(refused_host, job, options, parts):
    publisher, events = parts
    the_job = job([refused_host("mx1.dest.test")], ["a@dest.test", "b@dest.test"])
    tracker = FakeTracker(delivered=[delivered("b@dest.test"), delivered("a@dest.test")])
    handler = DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker)

    await handle(handler)(incoming(the_job.SerializeToString(), returned=1))

    assert publisher.published == []  # a connection would have been refused: deferred, and a result published
    assert events.kinds() == ["duplicate", "delivered"]
    assert [(r.recipient, r.outcome) for r in events.events[1].delivered.recipients] == [
        ("a@dest.test", message_pb2.OUTCOME_DELIVERED),
        ("b@dest.test", message_pb2.OUTCOME_DELIVERED),
    ]


async def test_the_first_delivery_does_not_ask_the_tracker(start_peer, host_of, job, options, parts):
    publisher, events = parts
    peer = await start_peer()
    tracker = FakeTracker(delivered=[delivered("user@dest.test")])
    the_job = job([host_of("mx1.dest.test", peer)])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker))(
        incoming(the_job.SerializeToString())
    )
    assert tracker.asked == []
    assert len(await peer.wait_for_messages(1)) == 1


@pytest.mark.parametrize(
    "answer",
    [
        None,
        [],
        [events_pb2.RecipientOutcome(recipient="user@dest.test", outcome=message_pb2.OUTCOME_TEMPORARY)],
        [delivered("someone-else@dest.test")],
    ],
)
async def test_a_tracker_that_knows_no_delivery_changes_nothing(start_peer, host_of, job, options, parts, answer):
    publisher, events = parts
    peer = await start_peer()
    tracker = FakeTracker(delivered=answer)
    the_job = job([host_of("mx1.dest.test", peer)])
    # no answer (None): asked again after returns, then delivered without an answer once it came back often enough
    returned = UNANSWERED_RETURNS + 1 if answer is None else 0
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker))(
        incoming(the_job.SerializeToString(), redelivered=True, returned=returned)
    )
    assert tracker.asked == ["Q123TEST.dest.test"]
    [message] = await peer.wait_for_messages(1)
    assert message.rcpt_tos == ["user@dest.test"]
    assert events.kinds() == ["attempted", "delivered"]
    assert [r.recipient for r in events.events[1].delivered.recipients] == ["user@dest.test"]


async def test_a_redelivered_job_whose_check_got_no_answer_goes_back_to_be_asked_again(
    start_peer, host_of, job, options, parts
):
    """Right after a broker restart the tracker may not answer yet: the job is returned (TransientError: the
    consumer pauses, then requeues it) rather than sent again blindly, until it came back UNANSWERED_RETURNS times."""
    publisher, events = parts
    peer = await start_peer()
    tracker = FakeTracker(delivered=None)
    the_job = job([host_of("mx1.dest.test", peer)])
    handler = handle(DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker))
    for returned in range(UNANSWERED_RETURNS + 1):
        with pytest.raises(TransientError):
            await handler(incoming(the_job.SerializeToString(), redelivered=True, returned=returned))
    assert peer.messages == [] and publisher.published == [] and events.events == []


async def test_delete_publishes_nothing_and_says_deleted(refused_host, job, options, parts):
    publisher, events = parts
    decisions = FakeDecisions.deciding(Action.DELETE)
    the_job = job([refused_host("mx1.dest.test")], ["a@dest.test", "b@dest.test"])
    the_job.arrival_time.FromSeconds(1_700_000_000)
    handler = DeliverHandler(Deliverer(options), publisher, events=events, decisions=decisions)

    await handle(handler)(incoming(the_job.SerializeToString()))

    assert publisher.published == [] and publisher.raw == []
    assert decisions.asked == [
        {
            "queue_id": "Q123TEST",
            "sender": "alice@sender.test",
            "domain": "dest.test",
            "arrival": datetime.fromtimestamp(1_700_000_000, UTC),
        }
    ]
    [event] = events.events
    deleted = event.deleted
    assert (deleted.decision_id, deleted.actor, deleted.stage) == ("D1", "ops", "delivery-worker")
    assert not deleted.dsn_requested
    assert list(deleted.recipients) == ["a@dest.test", "b@dest.test"]


async def test_delete_with_a_dsn_reports_every_recipient_failed(refused_host, job, options, parts):
    publisher, events = parts
    decisions = FakeDecisions.deciding(Action.DELETE, dsn=True)
    the_job = job([refused_host("mx1.dest.test")], ["a@dest.test", "b@dest.test"])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, decisions=decisions))(
        incoming(the_job.SerializeToString())
    )
    result = result_of(publisher)
    assert [(r.recipient, r.outcome, r.status, r.diagnostic) for r in result.recipients] == [
        ("a@dest.test", message_pb2.OUTCOME_PERMANENT, "5.3.0", DELETED_DIAGNOSTIC),
        ("b@dest.test", message_pb2.OUTCOME_PERMANENT, "5.3.0", DELETED_DIAGNOSTIC),
    ]
    assert result.job.content == the_job.content  # the DSN returns the headers
    assert result.reporter == "delivery-worker"
    assert events.kinds() == ["deleted"] and events.events[0].deleted.dsn_requested


async def test_hold_moves_the_job_to_held_with_its_headers(refused_host, job, options, parts):
    publisher, events = parts
    decisions = FakeDecisions.deciding(Action.HOLD)
    the_job = job([refused_host("mx1.dest.test")])
    body = the_job.SerializeToString()
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, decisions=decisions))(incoming(body))
    assert publisher.published == []
    [raw] = publisher.raw
    assert raw.routing_key == HELD and raw.body == body
    assert raw.message_type == "kubemta.v1.DeliveryJob" and raw.message_id == the_job.job_id
    assert raw.headers == {RELEASE_TO: "route", QUEUE_ID: "Q123TEST", JOB_ID: "Q123TEST.dest.test", DECISION_ID: "D1"}
    [event] = events.events
    assert (event.held.reason, event.held.release_to, event.held.decision_id, event.held.actor) == (
        "admin",
        "route",
        "D1",
        "ops",
    )


async def test_no_decision_delivers(start_peer, host_of, job, options, parts):
    publisher, events = parts
    peer = await start_peer()
    decisions = FakeDecisions()
    the_job = job([host_of("mx1.dest.test", peer)])
    await handle(DeliverHandler(Deliverer(options), publisher, events=events, decisions=decisions))(
        incoming(the_job.SerializeToString())
    )
    assert len(decisions.asked) == 1
    assert len(await peer.wait_for_messages(1)) == 1
    assert events.kinds() == ["attempted", "delivered"]


async def test_poison_and_malformed_holds_say_held(job, options, parts):
    publisher, events = parts
    handler = handle(DeliverHandler(Deliverer(options), publisher, events=events, delivery_limit=3))
    host = message_pb2.RouteHost(hostname="mx1.dest.test", address="127.0.0.1", port=1)
    with pytest.raises(PermanentError):
        await handler(incoming(job([host]).SerializeToString(), returned=3))
    with pytest.raises(PermanentError):
        await handler(incoming(job([]).SerializeToString()))
    assert [(e.held.reason, e.held.release_to) for e in events.events] == [
        ("poison", "deliver"),
        ("malformed", "deliver"),
    ]
    assert publisher.published == []


def rule(decision_id: str, verb: int, **selector: str) -> events_pb2.AdminDecision:
    made = events_pb2.AdminDecision(decision_id=decision_id, actor="ops", verb=verb, selector=selector)  # type: ignore[arg-type]
    made.time.GetCurrentTime()
    return made


async def test_the_real_decisions_view_holds_and_deletes_what_an_operator_named(refused_host, job, options, parts):
    publisher, events = parts
    view = Decisions()
    the_job = job([refused_host("mx1.dest.test")])
    the_job.arrival_time.GetCurrentTime()
    hold = events_pb2.AdminDecision(
        decision_id="H1",
        actor="ops",
        verb=events_pb2.DECISION_VERB_HOLD,
        selector=events_pb2.Selector(domain="DEST.test"),
    )
    hold.time.GetCurrentTime()
    view.apply(hold)
    handler = handle(DeliverHandler(Deliverer(options), publisher, events=events, decisions=view))
    await handler(incoming(the_job.SerializeToString()))
    assert [(raw.headers or {})[DECISION_ID] for raw in publisher.raw] == ["H1"]
    delete = events_pb2.AdminDecision(
        decision_id="D2",
        actor="ops",
        verb=events_pb2.DECISION_VERB_DELETE,
        selector=events_pb2.Selector(queue_id="Q123TEST"),
    )
    delete.time.GetCurrentTime()
    view.apply(delete)
    await handler(incoming(the_job.SerializeToString()))
    assert events.kinds() == ["held", "deleted"] and publisher.published == []


async def test_deliveries_wait_for_the_decisions_read_at_the_start(start_peer, host_of, job, options, parts):
    publisher, events = parts
    peer = await start_peer()
    decisions = FakeDecisions()
    ready = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, ready.set)
    handler = DeliverHandler(Deliverer(options), publisher, events=events, decisions=decisions, decisions_ready=ready)
    the_job = job([host_of("mx1.dest.test", peer)])
    async with asyncio.timeout(10):
        await handle(handler)(incoming(the_job.SerializeToString()))
    assert ready.is_set() and len(decisions.asked) == 1
