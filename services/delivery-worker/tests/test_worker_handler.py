"""The `deliver` consumer: one DeliveryResult per job that is not delivered everywhere (test_worker_finished.py has
the jobs that end at the worker), published before the handler returns; a failed publish propagates (so the job
is not acknowledged); metrics move."""

from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import Handler, subscribe_deliveries
from kubemta_common.amqp.topology import DELIVER, RESULTS
from kubemta_common.errors import PermanentError, PublishFailed
from kubemta_common.service import ServiceCore
from kubemta_delivery_worker.__main__ import build
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.settings import WorkerSettings


def consumed(handler: DeliverHandler) -> Handler:
    """What the consumer of `deliver` calls with a delivery: the stage decodes the job for the handler."""
    return subscribe_deliveries(stages.DELIVER, handler).on_delivery


def incoming(body: bytes) -> AbstractIncomingMessage:
    return cast(
        AbstractIncomingMessage,
        SimpleNamespace(body=body, message_id="m1", headers={}, redelivered=False, routing_key="deliver"),
    )


async def test_publishes_exactly_one_result_carrying_the_job(start_peer, host_of, job, options, publisher):
    peer = await start_peer(rules={"gone": "550 5.1.1 No such user"})
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "gone@dest.test"], attempts=3)
    handler = consumed(DeliverHandler(Deliverer(options), publisher))

    await handler(incoming(the_job.SerializeToString()))

    [published] = publisher.published
    assert published.routing_key == RESULTS
    assert published.message_type == "kubemta.v1.DeliveryResult"
    assert published.message_id == the_job.job_id
    result = message_pb2.DeliveryResult.FromString(published.body)
    assert result.job == the_job, "the job travels back unchanged (attempts included)"
    assert result.job.attempts == 3
    assert result.reporter == "delivery-worker"
    assert result.attempted_at.seconds > 0
    assert [(r.recipient, r.outcome) for r in result.recipients] == [
        ("a@dest.test", message_pb2.OUTCOME_DELIVERED),
        ("gone@dest.test", message_pb2.OUTCOME_PERMANENT),
    ]
    assert len(peer.messages) == 1


@pytest.mark.parametrize(
    ("rules", "content_kept"),
    [({"later": "451 4.2.0 Try later"}, True), ({"later": "550 5.1.1 No such user"}, True)],
)
async def test_the_content_travels_back_only_while_it_may_still_be_needed(
    start_peer, host_of, job, options, publisher, rules, content_kept
):
    """A retry or a bounce may follow, so the result carries the content (all delivered: no result at all)."""
    peer = await start_peer(rules=rules)
    the_job = job([host_of("mx1.dest.test", peer)], ["a@dest.test", "later@dest.test"])
    assert the_job.content
    await consumed(DeliverHandler(Deliverer(options), publisher))(incoming(the_job.SerializeToString()))

    result = message_pb2.DeliveryResult.FromString(publisher.published[0].body)
    assert result.job.content == (the_job.content if content_kept else b"")
    the_job.ClearField("content")
    result.job.ClearField("content")
    assert result.job == the_job, "everything else about the job travels back"


async def test_publish_failure_propagates(start_peer, host_of, job, options, publisher):
    peer = await start_peer(rules={"later": "451 4.2.0 Try later"})
    publisher.error = PublishFailed("no confirm from the broker within 10s")
    handler = consumed(DeliverHandler(Deliverer(options), publisher))

    with pytest.raises(PublishFailed):
        await handler(incoming(job([host_of("mx1.dest.test", peer)], ["later@dest.test"]).SerializeToString()))

    assert publisher.published == []


async def test_undecodable_job_is_a_permanent_error(options, publisher):
    handler = consumed(DeliverHandler(Deliverer(options), publisher))

    with pytest.raises(PermanentError):
        await handler(incoming(b"\xff\xff\xff not a protobuf"))

    assert publisher.published == []


async def test_metrics_move_per_recipient_and_per_job(start_peer, host_of, job, options, publisher, metric):
    peer = await start_peer(rules={"busy": "450 4.2.0 Mailbox busy", "gone": "550 5.1.1 No such user"})
    before: dict[str, Any] = {
        result: metric("kubemta_delivery_attempts_total", result=result)
        for result in ("delivered", "deferred", "bounced")
    }
    jobs_before = metric("kubemta_delivery_duration_seconds_count")
    ok_before = metric("kubemta_smtp_connections_total", result="ok")
    handler = DeliverHandler(Deliverer(options), publisher)

    await handler.process(
        job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test", "busy@dest.test", "gone@dest.test"])
    )

    assert metric("kubemta_delivery_attempts_total", result="delivered") == before["delivered"] + 2
    assert metric("kubemta_delivery_attempts_total", result="deferred") == before["deferred"] + 1
    assert metric("kubemta_delivery_attempts_total", result="bounced") == before["bounced"] + 1
    assert metric("kubemta_delivery_duration_seconds_count") == jobs_before + 1
    assert metric("kubemta_smtp_connections_total", result="ok") == ok_before + 1


def test_metrics_are_preinitialised(metric):
    from prometheus_client import REGISTRY

    names = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in REGISTRY.collect()
        for sample in family.samples
    }
    for result in ("delivered", "deferred", "bounced"):
        assert ("kubemta_delivery_attempts_total", (("result", result),)) in names
    for result in ("ok", "refused", "timeout", "tls_failed", "error"):
        assert ("kubemta_smtp_connections_total", (("result", result),)) in names


def test_build_consumes_deliver(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEMTA_HOSTNAME", "worker.example")
    settings = WorkerSettings.load()
    core = ServiceCore("delivery-worker", settings)

    small, large = build(core, settings)

    assert (small.queue, large.queue) == (DELIVER, f"{DELIVER}.large")
    assert isinstance(small.subscription.handler, DeliverHandler) and large.subscription is small.subscription
    assert small.subscription.stage is stages.DELIVER
    assert (small.large_lane, large.large_lane) == (False, True)  # the large lane's prefetch: KUBEMTA_CONSUMER_MEMORY


def test_the_result_carries_the_job_as_it_came_without_decoding_it_again():
    from google.protobuf.timestamp_pb2 import Timestamp

    from kubemta_delivery_worker.handler import result_body

    job = message_pb2.DeliveryJob(
        queue_id="Q", job_id="Q.1", sender="a@x.test", domain="d.test", recipients=["b@d.test", "c@d.test"],
        content=b"Subject: big\r\n\r\n" + b"z" * 300_000,
    )  # fmt: skip
    received = job.SerializeToString()
    when = Timestamp(seconds=1_700_000_000)
    deferred = [
        message_pb2.RecipientResult(recipient="b@d.test", outcome=message_pb2.OUTCOME_DELIVERED, status="2.0.0"),
        message_pb2.RecipientResult(recipient="c@d.test", outcome=message_pb2.OUTCOME_TEMPORARY, status="4.2.0"),
    ]
    body = result_body(job, deferred, when, received).body
    assert received in body  # the received bytes, as they came
    expected = message_pb2.DeliveryResult(job=job, recipients=deferred, attempted_at=when, reporter="delivery-worker")
    assert message_pb2.DeliveryResult.FromString(body) == expected

    delivered = [
        message_pb2.RecipientResult(recipient=r, outcome=message_pb2.OUTCOME_DELIVERED) for r in job.recipients
    ]
    parsed = message_pb2.DeliveryResult.FromString(result_body(job, delivered, when, received).body)
    assert (
        parsed.job.content == b""
        and parsed.job.job_id == "Q.1"
        and list(parsed.job.recipients) == ["b@d.test", "c@d.test"]
    )


def test_a_delivered_job_takes_back_its_headers_only_when_kubemta_owes_a_success_dsn():
    """RFC 3461 §4.1: NOTIFY=SUCCESS relayed to a next hop without DSN (or delivered over LMTP) gets a success DSN
    from kubemta, which returns the original headers; a next hop that took the parameters reports itself."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from kubemta_delivery_worker.handler import SUCCESS_HEADERS_LIMIT, result_body

    headers = b"Subject: hi\r\nMessage-ID: <m@x.test>\r\n\r\n"
    when = Timestamp(seconds=1_700_000_000)

    def returned(
        handoff: message_pb2.Handoff.ValueType, *, notify: bool = True, sender: str = "a@x.test", content: bytes = b""
    ) -> bytes:
        job = message_pb2.DeliveryJob(
            queue_id="Q", job_id="Q.1", sender=sender, domain="d.test", recipients=["b@d.test"],
            content=content or headers + b"body\r\n" * 1000,
        )  # fmt: skip
        if notify:
            job.recipient_dsn["b@d.test"].CopyFrom(message_pb2.RecipientDsn(notify_given=True, notify_success=True))
        delivered = [
            message_pb2.RecipientResult(recipient="b@d.test", outcome=message_pb2.OUTCOME_DELIVERED, handoff=handoff)
        ]  # fmt: skip
        return message_pb2.DeliveryResult.FromString(result_body(job, delivered, when, None).body).job.content

    assert returned(message_pb2.HANDOFF_RELAYED) == headers
    assert returned(message_pb2.HANDOFF_DELIVERED) == headers
    assert returned(message_pb2.HANDOFF_UNSPECIFIED) == headers
    assert returned(message_pb2.HANDOFF_DSN_PASSED) == b""
    assert returned(message_pb2.HANDOFF_RELAYED, notify=False) == b""
    assert returned(message_pb2.HANDOFF_RELAYED, sender="") == b""
    huge = b"".join(b"X-Long-%d: %s\r\n" % (n, b"v" * 100) for n in range(1000)) + b"\r\nbody\r\n"
    cut = returned(message_pb2.HANDOFF_RELAYED, content=huge)
    assert len(cut) <= SUCCESS_HEADERS_LIMIT and cut.endswith(b"\r\n") and huge.startswith(cut)
