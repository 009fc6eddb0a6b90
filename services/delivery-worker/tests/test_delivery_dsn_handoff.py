"""The handoff of recipients delivered in an earlier attempt (handoff.py): the journal keeps the one recorded, the
tracker records none (then LMTP is still final delivery, an SMTP hop is taken as relayed), and the result that
reports them again says so (a recipient that asked NOTIFY=SUCCESS: a success DSN is owed, so the result goes to the
queue-manager), or the `delivered` event of a job that ends at the worker (the next hop reports: no DSN owed)."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe_deliveries
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.handoff import assumed_handoff, handoff_for
from kubemta_delivery_worker.journal import DeliveryJournal
from tests.harness.fake_events import PublishCountingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.fake_tracker import FakeTracker

DELIVERED = message_pb2.OUTCOME_DELIVERED
SUCCESS = message_pb2.RecipientDsn(notify_given=True, notify_success=True)


def asking_success(the_job: message_pb2.DeliveryJob) -> message_pb2.DeliveryJob:
    """`the_job` with NOTIFY=SUCCESS for every recipient (the handoff then decides whether a success DSN is owed)."""
    for recipient in the_job.recipients:
        the_job.recipient_dsn[recipient].CopyFrom(SUCCESS)
    return the_job


def delivered(recipient: str, handoff: "message_pb2.Handoff.ValueType") -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(
        recipient=recipient, outcome=DELIVERED, smtp_code=250, status="2.0.0", remote_mta="mx1", handoff=handoff
    )


def redelivery(the_job: message_pb2.DeliveryJob) -> AbstractIncomingMessage:
    message = SimpleNamespace(body=the_job.SerializeToString(), message_id="m1", headers={}, redelivered=True)
    message.routing_key = "deliver"
    return cast(AbstractIncomingMessage, message)


def test_handoff_by_transport_and_offer() -> None:
    assert handoff_for(final_delivery=True, dsn_offered=False) == message_pb2.HANDOFF_DELIVERED
    assert handoff_for(final_delivery=True, dsn_offered=True) == message_pb2.HANDOFF_DELIVERED
    assert handoff_for(final_delivery=False, dsn_offered=True) == message_pb2.HANDOFF_DSN_PASSED
    assert handoff_for(final_delivery=False, dsn_offered=False) == message_pb2.HANDOFF_RELAYED
    assert assumed_handoff(message_pb2.TRANSPORT_KIND_LMTP) == message_pb2.HANDOFF_DELIVERED
    assert assumed_handoff(message_pb2.TRANSPORT_KIND_SMTP) == message_pb2.HANDOFF_RELAYED


def test_the_journal_keeps_each_recipients_handoff(tmp_path: Path) -> None:
    journal = DeliveryJournal(tmp_path / "journal")
    journal.record("Q1.example", [delivered("a@x.test", message_pb2.HANDOFF_DSN_PASSED)])
    journal.record("Q1.example", [delivered("b@x.test", message_pb2.HANDOFF_RELAYED)])
    journal.close()

    found = DeliveryJournal(tmp_path / "journal").delivered("Q1.example")

    assert {rcpt: result.handoff for rcpt, result in found.items()} == {
        "a@x.test": message_pb2.HANDOFF_DSN_PASSED,
        "b@x.test": message_pb2.HANDOFF_RELAYED,
    }


@pytest.mark.parametrize("sixth", ["absent", 99, True, "3", None])
def test_a_journal_line_without_a_known_handoff_reads_as_unspecified(tmp_path: Path, sixth: object) -> None:
    """Lines of a worker from before the handoff (five items), or damaged ones: the recipient is still found."""
    item: list[object] = ["a@x.test", 250, "2.0.0", "250 ok", "mx1"]
    if sixth != "absent":
        item.append(sixth)
    (tmp_path / "journal").write_text(json.dumps({"job": "Q1.example", "delivered": [item]}) + "\n")

    [result] = DeliveryJournal(tmp_path / "journal").delivered("Q1.example").values()

    assert (result.recipient, result.outcome, result.handoff) == ("a@x.test", DELIVERED, 0)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (message_pb2.TRANSPORT_KIND_SMTP, message_pb2.HANDOFF_RELAYED),
        (message_pb2.TRANSPORT_KIND_LMTP, message_pb2.HANDOFF_DELIVERED),
    ],
)
async def test_recipients_the_tracker_knows_as_delivered_get_the_routes_handoff(
    refused_host, job, options, kind: "message_pb2.TransportKind.ValueType", expected: int
) -> None:
    publisher = FakePublisher()
    events = PublishCountingEvents(publisher, service="delivery-worker")
    the_job = asking_success(job([refused_host("mx1.dest.test")], ["a@dest.test"]))
    the_job.route.kind = kind
    tracker = FakeTracker(
        delivered=[events_pb2.RecipientOutcome(recipient="a@dest.test", outcome=DELIVERED, smtp_code=250)]
    )
    handler = DeliverHandler(Deliverer(options), publisher, events=events, tracker=tracker)

    await subscribe_deliveries(stages.DELIVER, handler).on_delivery(redelivery(the_job))

    [published] = publisher.published
    [result] = message_pb2.DeliveryResult.FromString(published.body).recipients
    assert (result.outcome, result.handoff) == (DELIVERED, expected)


async def test_a_handoff_the_tracker_recorded_is_reported_again_as_it_was(refused_host, job, options) -> None:
    """Another pod delivered to a hop that offered DSN and died before its result: the `attempted` event the
    tracker indexed carries the handoff, so the redelivered job does not claim the recipient was merely relayed."""
    publisher = FakePublisher()
    events = PublishCountingEvents(publisher, service="delivery-worker")
    the_job = asking_success(job([refused_host("mx1.dest.test")], ["a@dest.test"]))
    recorded = events_pb2.RecipientOutcome(
        recipient="a@dest.test", outcome=DELIVERED, smtp_code=250, handoff=message_pb2.HANDOFF_DSN_PASSED
    )
    handler = DeliverHandler(Deliverer(options), publisher, events=events, tracker=FakeTracker(delivered=[recorded]))

    await subscribe_deliveries(stages.DELIVER, handler).on_delivery(redelivery(the_job))

    assert publisher.published == []  # the next hop reports: no success DSN owed, the job ends at the worker
    [fate] = events.of_kind("delivered")
    [outcome] = fate.delivered.recipients
    assert (outcome.outcome, outcome.handoff) == (DELIVERED, message_pb2.HANDOFF_DSN_PASSED)


async def test_a_journaled_handoff_is_reported_again_as_it_was(start_peer, host_of, job, options, tmp_path) -> None:
    """A hop that offered DSN took the mail; the worker died before its result; the restarted one must not claim
    the recipient was merely relayed (a "relayed" DSN would then go to a sender the hop already reports to)."""
    publisher = FakePublisher()
    events = PublishCountingEvents(publisher, service="delivery-worker")
    peer = await start_peer(dsn=True)
    the_job = asking_success(job([host_of("mx1.dest.test", peer)], ["a@dest.test"]))
    first = DeliverHandler(Deliverer(options), publisher, events=events, journal=DeliveryJournal(tmp_path / "j"))
    await subscribe_deliveries(stages.DELIVER, first).on_delivery(redelivery(the_job))
    publisher.published.clear()
    [attempted] = events.of_kind("attempted")  # what the tracker indexes, for a pod without this journal
    assert [outcome.handoff for outcome in attempted.attempted.recipients] == [message_pb2.HANDOFF_DSN_PASSED]

    restarted = DeliverHandler(
        Deliverer(options),
        publisher,
        events=events,
        tracker=FakeTracker(delivered=[]),
        journal=DeliveryJournal(tmp_path / "j"),
    )
    await subscribe_deliveries(stages.DELIVER, restarted).on_delivery(redelivery(the_job))

    assert len(peer.messages) == 1
    assert publisher.published == []  # the next hop reports: no success DSN owed, the job ends at the worker
    [outcome] = events.of_kind("delivered")[-1].delivered.recipients
    assert (outcome.outcome, outcome.handoff) == (DELIVERED, message_pb2.HANDOFF_DSN_PASSED)
