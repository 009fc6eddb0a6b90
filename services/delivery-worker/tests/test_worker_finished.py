"""Jobs that end at the delivery worker (finished.py): every recipient delivered and no success DSN owed publishes
nothing to `results`; the worker records the `delivered` fate event, counts the recipients and the queue time, and
logs the queue-manager's line. Any deferral, bounce or owed success DSN publishes the result as before."""

import asyncio
import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe_deliveries
from kubemta_common.amqp.topology import RESULTS
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.finished import ends_here
from kubemta_delivery_worker.handler import DeliverHandler
from tests.harness.fake_events import PublishCountingEvents, RecordingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.fake_tracker import FakeTracker

DELIVERED = message_pb2.OUTCOME_DELIVERED
SUCCESS = message_pb2.RecipientDsn(notify_given=True, notify_success=True)


class _Message(SimpleNamespace):
    acks = 0

    async def ack(self) -> None:
        self.acks += 1


def incoming(body: bytes, *, redelivered: bool = False) -> _Message:
    return _Message(body=body, message_id="m1", headers={}, redelivered=redelivered, routing_key="deliver")


async def deliver(handler: DeliverHandler, message: _Message) -> None:
    await subscribe_deliveries(stages.DELIVER, handler).on_delivery(cast(AbstractIncomingMessage, message))


@pytest.fixture
def parts() -> tuple[FakePublisher, PublishCountingEvents]:
    publisher = FakePublisher()
    return publisher, PublishCountingEvents(publisher, service="delivery-worker")


def counters(metric: Any) -> tuple[float, float]:
    return metric("kubemta_recipients_delivered_total", provider="other"), metric("kubemta_queue_time_seconds_count")


async def test_a_job_delivered_everywhere_publishes_no_result_and_records_its_fate(
    start_peer, host_of, job, options, parts, metric, caplog
):
    publisher, events = parts
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"], attempts=1)
    the_job.message_id = "<m1@sender.test>"
    the_job.arrival_time.GetCurrentTime()
    the_job.arrival_time.seconds -= 60
    delivered_before, timed_before = counters(metric)
    buckets_before = [metric("kubemta_queue_time_seconds_bucket", le=le) for le in ("60.0", "300.0")]
    handler = DeliverHandler(Deliverer(options), publisher, events=events)
    message = incoming(the_job.SerializeToString())

    with caplog.at_level(logging.DEBUG, logger="kubemta_delivery_worker.finished"):
        await deliver(handler, message)

    assert len(peer.messages) == 1
    assert publisher.published == [] and publisher.raw == []  # nothing to `results`
    assert events.kinds() == ["attempted", "delivered"]
    assert events.published_at_record == [0, 0]
    fate = events.events[1]
    assert (fate.queue_id, fate.job_id, fate.message_id, fate.attempt) == (
        "Q123TEST",
        "Q123TEST.dest.test",
        "<m1@sender.test>",
        1,
    )
    assert (fate.delivered.domain, fate.delivered.provider) == ("dest.test", "other")
    outcomes = [(r.recipient, r.outcome, r.smtp_code, r.status, r.handoff) for r in fate.delivered.recipients]
    relayed = message_pb2.HANDOFF_RELAYED
    assert outcomes == [
        ("a@dest.test", DELIVERED, 250, "2.0.0", relayed),
        ("b@dest.test", DELIVERED, 250, "2.0.0", relayed),
    ]
    assert counters(metric) == (delivered_before + 2, timed_before + 2)
    buckets = [metric("kubemta_queue_time_seconds_bucket", le=le) for le in ("60.0", "300.0")]
    assert buckets == [buckets_before[0], buckets_before[1] + 2]  # an age just over 60 s
    lines = [r.getMessage() for r in caplog.records if r.name == "kubemta_delivery_worker.finished"]
    assert len(lines) == 2
    assert lines[0].startswith("to=<a@dest.test> relay=") and " attempts=2 dsn=2.0.0 status=delivered (" in lines[0]


async def test_a_deferred_recipient_publishes_the_result_as_before(start_peer, host_of, job, options, parts, metric):
    publisher, events = parts
    peer = await start_peer(rules={"later": "450 4.2.0 try again later"})
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "later@dest.test"])
    before = counters(metric)

    await deliver(DeliverHandler(Deliverer(options), publisher, events=events), incoming(the_job.SerializeToString()))

    [published] = publisher.published
    assert published.routing_key == RESULTS
    result = message_pb2.DeliveryResult.FromString(published.body)
    assert [(r.recipient, r.outcome) for r in result.recipients] == [
        ("a@dest.test", DELIVERED),
        ("later@dest.test", message_pb2.OUTCOME_TEMPORARY),
    ]
    assert result.job.content == the_job.content
    assert events.kinds() == ["attempted"]  # the queue-manager writes the fate events
    assert counters(metric) == before


async def test_notify_success_to_a_relay_without_dsn_publishes_the_result(
    start_peer, host_of, job, options, parts, metric
):
    """kubemta owes the sender a "relayed" DSN: the queue-manager must decide it, so the result goes to it."""
    publisher, events = parts
    peer = await start_peer(dsn=False)
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"])
    the_job.recipient_dsn["b@dest.test"].CopyFrom(SUCCESS)
    before = counters(metric)

    await deliver(DeliverHandler(Deliverer(options), publisher, events=events), incoming(the_job.SerializeToString()))

    result = message_pb2.DeliveryResult.FromString(publisher.published[0].body)
    assert [(r.outcome, r.handoff) for r in result.recipients] == [(DELIVERED, message_pb2.HANDOFF_RELAYED)] * 2
    assert result.job.content  # the header block, for the success DSN
    assert events.kinds() == ["attempted"]
    assert counters(metric) == before


async def test_notify_success_passed_to_a_hop_offering_dsn_ends_the_job(start_peer, host_of, job, options, parts):
    """The next hop took the DSN parameters over and reports from then on: kubemta owes nothing."""
    publisher, events = parts
    peer = await start_peer(dsn=True)
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test"])
    the_job.recipient_dsn["a@dest.test"].CopyFrom(SUCCESS)

    await deliver(DeliverHandler(Deliverer(options), publisher, events=events), incoming(the_job.SerializeToString()))

    assert publisher.published == []
    [outcome] = events.of_kind("delivered")[0].delivered.recipients
    assert outcome.handoff == message_pb2.HANDOFF_DSN_PASSED


@pytest.mark.parametrize("generated", [False, True], ids=["null-sender", "kubemta-dsn"])
async def test_a_null_sender_or_a_dsn_never_owes_a_success_dsn(start_peer, host_of, job, options, parts, generated):
    publisher, events = parts
    peer = await start_peer()
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test"], sender="" if not generated else "a@s.test")
    the_job.generated = generated
    the_job.recipient_dsn["a@dest.test"].CopyFrom(SUCCESS)

    await deliver(DeliverHandler(Deliverer(options), publisher, events=events), incoming(the_job.SerializeToString()))

    assert publisher.published == [] and events.kinds() == ["attempted", "delivered"]


def outcome(recipient: str) -> events_pb2.RecipientOutcome:
    return events_pb2.RecipientOutcome(recipient=recipient, outcome=DELIVERED, smtp_code=250, status="2.0.0")


async def test_a_redelivery_after_the_fate_was_recorded_records_and_counts_nothing_again(
    refused_host, job, options, parts, metric
):
    """Killed after `delivered` was confirmed, before the ack: the job comes back; the tracker knows every recipient
    as delivered and the job's fate at this attempt as recorded, so nothing is sent, recorded or counted again."""
    publisher, events = parts
    the_job = job([refused_host("mx1.dest.test")], ["a@dest.test"], attempts=2)
    tracker = FakeTracker(delivered=[outcome("a@dest.test")])
    tracker.answers[("fate", "", "Q123TEST.dest.test", 2)] = True
    before = counters(metric)
    message = incoming(the_job.SerializeToString(), redelivered=True)

    await deliver(DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker), message)

    assert tracker.asked == ["Q123TEST.dest.test", ("fate", "", "Q123TEST.dest.test", 2)]
    assert publisher.published == [] and events.kinds() == ["duplicate"]
    assert counters(metric) == before


@pytest.mark.parametrize("recorded", [False, None], ids=["absent", "unknown"])
async def test_a_redelivery_whose_fate_is_not_known_records_and_counts_it(
    refused_host, job, options, parts, metric, recorded
):
    """Killed after `attempted`, before `delivered` (or the tracker cannot tell): the job ends here this time."""
    publisher, events = parts
    the_job = job([refused_host("mx1.dest.test")], ["a@dest.test"])
    tracker = FakeTracker(recorded, delivered=[outcome("a@dest.test")])
    delivered_before, timed_before = counters(metric)

    await deliver(
        DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker),
        incoming(the_job.SerializeToString(), redelivered=True),
    )

    assert publisher.published == [] and events.kinds() == ["duplicate", "delivered"]
    assert counters(metric) == (delivered_before + 1, timed_before + 1)


class _SlowEvents(RecordingEvents):
    def __init__(self) -> None:
        super().__init__(service="delivery-worker")
        self.started = asyncio.Event()

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        self.started.set()
        await asyncio.sleep(0.3)
        return await super().record(event)


async def test_cancelled_while_recording_the_fate_finishes_it_and_acknowledges(start_peer, host_of, job, options):
    """The drain's deadline comes while the `delivered` event waits for its confirm: the mail went out, so the
    events are recorded and the job acknowledged rather than delivered again."""
    peer = await start_peer()
    events = _SlowEvents()
    publisher = FakePublisher()
    message = incoming(job([host_of("mx1.dest.test", peer)]).SerializeToString())
    task = asyncio.ensure_future(deliver(DeliverHandler(Deliverer(options), publisher, events=events), message))
    async with asyncio.timeout(10):
        await events.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert len(peer.messages) == 1
    assert events.kinds() == ["attempted", "delivered"] and publisher.published == []
    assert message.acks == 1


def result(recipient: str, outcome: "message_pb2.Outcome.ValueType" = DELIVERED) -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(recipient=recipient, outcome=outcome, handoff=message_pb2.HANDOFF_RELAYED)


def test_a_recipient_without_a_result_keeps_the_job_going_to_the_queue_manager(job) -> None:
    the_job = job([], ["a@dest.test", "b@dest.test"])
    assert ends_here(the_job, [result("a@dest.test"), result("b@dest.test")])
    assert not ends_here(the_job, [result("a@dest.test")])  # the queue-manager retries a missing one
    assert not ends_here(the_job, [result("a@dest.test"), result("b@dest.test", message_pb2.OUTCOME_PERMANENT)])
