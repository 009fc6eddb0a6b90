"""The queue-manager's lifecycle events: signed, queued, one per disposition of a result, the DSN batcher's, and
none of them before the bus messages they describe were confirmed."""

import asyncio
from datetime import timedelta

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.topology import DSN, ROUTE
from kubemta_common.errors import PublishFailed
from kubemta_common.splitter import split
from kubemta_common.timestamps import now_timestamp, to_datetime
from kubemta_mail_auth.dkim.keys import KeyStore
from kubemta_queue_manager import handlers
from kubemta_queue_manager.dkim_signer import DkimSigner
from kubemta_queue_manager.dsn_batcher import DsnBatcher
from kubemta_queue_manager.handlers import QueueManager
from tests.harness.fake_events import RecordingEvents

WAIT = 10.0


def accepted(recipients: list[str], *, message_id: str = "<m1@example.com>", content: bytes = b"") -> bytes:
    return message_pb2.AcceptedMessage(
        queue_id="QACC",
        sender="alice@example.com",
        recipients=recipients,
        content=content or b"From: alice@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
        message_id=message_id,
        trust=message_pb2.TRUST_AUTHENTICATED,
    ).SerializeToString()


def outcome_dict(event: events_pb2.LifecycleEvent, kind: str) -> list[dict[str, object]]:
    return [MessageToDict(entry, preserving_proto_field_name=True) for entry in getattr(event, kind).recipients]


@given(message_id=st.text(max_size=200))
@settings(max_examples=50)
def test_every_job_carries_the_message_id_as_received(message_id: str) -> None:
    message = message_pb2.AcceptedMessage.FromString(accepted(["a@one.example", "b@two.example", "c@one.example"]))
    message.message_id = message_id
    assert [job.message_id for job in split(message, "mx.kubemta.test")] == [message_id, message_id]


async def test_queued_is_recorded_after_the_jobs_were_confirmed(manager, publisher, events, kit) -> None:
    hostile = "<evil\r\nX-Injected: yes@example.com>"
    published_at: list[int] = []
    publish_all = publisher.publish_all

    async def timed_publish_all(*args, **kwargs) -> None:
        published_at.append(now_timestamp().ToNanoseconds())
        await publish_all(*args, **kwargs)

    publisher.publish_all = timed_publish_all
    await manager.handle_accepted(
        kit_decode(accepted(["bob@example.org", "carol@example.net", "dave@example.org"], message_id=hostile))
    )
    assert events.kinds() == ["queued"]
    assert events.record_calls == 1
    (queued,) = events.events
    assert (queued.queue_id, queued.message_id, queued.job_id) == ("QACC", hostile, "")
    assert queued.time.ToNanoseconds() <= published_at[0]  # before the jobs went out: the resolver may be quicker
    assert [(job.job_id, job.domain, list(job.recipients)) for job in queued.queued.jobs] == [
        ("QACC.1", "example.org", ["bob@example.org", "dave@example.org"]),
        ("QACC.2", "example.net", ["carol@example.net"]),
    ]
    jobs = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in publisher.to(ROUTE)]
    assert [job.message_id for job in jobs] == [hostile, hostile]


async def test_queued_carries_the_duplicate_key_and_arrival(manager, events, kit) -> None:
    """For the tracker, in case the ingress died before its `received` event (a client's retry comes then)."""
    message = kit_decode(accepted(["bob@example.org"]))
    message.dedup_key = "ab" * 32
    await manager.handle_accepted(message)
    (queued,) = events.events
    assert queued.queued.dedup_key == "ab" * 32
    assert queued.queued.arrival_time == message.arrival_time
    dsn = kit_decode(accepted(["bob@example.org"]))
    dsn.generated, dsn.dedup_key, dsn.queue_id = True, "cd" * 32, "QDSN"
    await manager.handle_accepted(dsn)
    assert events.events[-1].queued.dedup_key == ""  # kubemta's own DSNs are never a client's retry


async def test_queued_lists_every_job_once_when_they_go_in_several_batches(
    manager, publisher, events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "PUBLISH_BATCH_BYTES", 1)  # every job a batch of its own
    recipients = [f"r@d{number}.example" for number in range(5)]
    await manager.handle_accepted(kit_decode(accepted(recipients)))
    assert len(publisher.batches) == 5
    (queued,) = events.of_kind("queued")
    assert [job.domain for job in queued.queued.jobs] == [f"d{number}.example" for number in range(5)]


async def test_a_failure_in_a_later_batch_records_nothing(
    manager, publisher, events, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "PUBLISH_BATCH_BYTES", 1)
    real = publisher.publish_all

    async def second_fails(messages) -> None:
        if publisher.batches:
            raise PublishFailed("no confirm")
        await real(messages)

    monkeypatch.setattr(publisher, "publish_all", second_fails)
    with pytest.raises(PublishFailed):
        await manager.handle_accepted(kit_decode(accepted(["a@one.example", "b@two.example"])))
    assert events.events == []


async def test_a_failed_publish_records_nothing(manager, publisher, events) -> None:
    publisher.fail = True
    with pytest.raises(PublishFailed):
        await manager.handle_accepted(kit_decode(accepted(["bob@example.org"])))
    assert events.events == []


async def test_a_stream_outage_does_not_stop_the_message(kit, publisher) -> None:
    events = RecordingEvents(recorded=False)
    manager = QueueManager(kit.settings(), publisher, events=events, clock=lambda: kit.NOW)
    await manager.handle_accepted(kit_decode(accepted(["bob@example.org"])))
    assert len(publisher.to(ROUTE)) == 1
    assert events.kinds() == ["queued"]


async def test_a_message_without_recipients_is_recorded_as_queued_with_no_jobs(manager, events, publisher) -> None:
    await manager.handle_accepted(kit_decode(accepted([])))
    assert publisher.published == []
    (queued,) = events.of_kind("queued")
    assert list(queued.queued.jobs) == []


async def test_signed_lists_each_signature_before_queued(dkim_zone, publisher, kit) -> None:
    dkim_zone.generate("example.com", "rsa", "rsa")
    dkim_zone.generate("example.com", "ed", "ed25519")
    events = RecordingEvents()
    manager = QueueManager(kit.settings(), publisher, events=events, signer=DkimSigner(KeyStore(dkim_zone.keys_dir)))
    await manager.handle_accepted(kit_decode(accepted(["bob@example.org"])))
    assert events.kinds() == ["signed", "queued"]
    signed = events.events[0]
    assert signed.queue_id == "QACC" and signed.message_id == "<m1@example.com>"
    assert sorted(signed.signed.signatures) == [
        "d=example.com s=ed a=ed25519-sha256",
        "d=example.com s=rsa a=rsa-sha256",
    ]


async def test_an_unsigned_message_has_no_signed_event(manager, events) -> None:
    await manager.handle_accepted(kit_decode(accepted(["bob@example.org"])))
    assert events.of_kind("signed") == []


async def test_one_event_per_disposition_after_the_outputs_were_confirmed(kit, manager, publisher, events) -> None:
    job = kit.job(["bob@example.org", "carol@example.org", "dave@example.org"], provider="google", attempts=2)
    job.message_id = "<m1@example.com>"
    result = kit.result(
        job, [kit.delivered("bob@example.org"), kit.deferred("carol@example.org"), kit.bounced("dave@example.org")]
    )
    await manager.handle_result(result)
    assert events.kinds() == ["delivered", "deferred", "bounced"]
    assert events.record_calls == 3
    for event in events.events:
        assert (event.queue_id, event.job_id, event.message_id, event.attempt) == (
            "QID1",
            "QID1.1",
            "<m1@example.com>",
            2,
        )
    delivered, deferred, bounced = events.events
    assert delivered.delivered.domain == "example.org"
    assert outcome_dict(delivered, "delivered") == [
        {
            "recipient": "bob@example.org",
            "outcome": "OUTCOME_DELIVERED",
            "smtp_code": 250,
            "status": "2.0.0",
            "diagnostic": "2.0.0 Ok",
        }
    ]
    assert deferred.deferred.retry_queue == "retry.20m"
    assert to_datetime(deferred.deferred.next_attempt) == kit.NOW + timedelta(seconds=1200)
    assert [entry.recipient for entry in deferred.deferred.recipients] == ["carol@example.org"]
    assert bounced.bounced.dsn_requested
    assert bounced.bounced.recipients[0].status == "5.1.1"
    assert bounced.bounced.recipients[0].remote_mta == "mx1.example.org"
    assert [getattr(event, event.WhichOneof("kind") or "").provider for event in events.events] == ["google"] * 3
    assert len(publisher.to(DSN)) == 1


async def test_expired_recipients_report_4_4_7(kit, manager, events) -> None:
    job = kit.job(["bob@example.org"], age=timedelta(days=6))
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))
    (expired,) = events.events
    assert expired.WhichOneof("kind") == "expired"
    assert expired.expired.recipients[0].status == "4.4.7"
    assert expired.expired.dsn_requested


async def test_a_null_sender_bounce_requests_no_dsn(kit, manager, events) -> None:
    job = kit.job(["bob@example.org"], sender="")
    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))
    (bounced,) = events.events
    assert bounced.WhichOneof("kind") == "bounced"
    assert not bounced.bounced.dsn_requested


async def test_a_failed_result_publish_records_nothing(kit, manager, publisher, events) -> None:
    publisher.fail = True
    job = kit.job(["bob@example.org"])
    with pytest.raises(PublishFailed):
        await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))
    assert events.events == []


async def test_the_dsn_batcher_records_the_dsn_it_queued(kit, publisher) -> None:
    events = RecordingEvents()
    batcher = DsnBatcher(publisher, kit.HOSTNAME, window=3600, max_held=1, events=events)
    request = message_pb2.DsnRequest(
        queue_id="QORIG",
        sender="alice@example.com",
        action=message_pb2.DSN_ACTION_FAILED,
        recipients=[message_pb2.DsnRecipient(recipient="bob@example.org", status="5.1.1", smtp_code=550)],
        original_headers=b"Subject: hi\r\n\r\n",
        job_id="QORIG.1",
        message_id="<orig@app.example>",
    )
    request.arrival_time.FromDatetime(kit.NOW)
    request.last_attempt.FromDatetime(kit.NOW)
    async with asyncio.timeout(WAIT):
        await batcher.add(request)
    ((_, body, _, _),) = publisher.published
    dsn = message_pb2.AcceptedMessage.FromString(body)
    assert dsn.message_id == f"<{dsn.queue_id}@{kit.HOSTNAME}>"
    assert events.kinds() == ["received", "dsn_sent"]
    received, sent = events.events
    assert (received.queue_id, received.message_id) == (dsn.queue_id, dsn.message_id)
    assert received.received.generated and received.received.sender == ""
    assert list(received.received.recipients) == ["alice@example.com"]
    assert received.received.size == len(dsn.content)
    assert received.received.headers.startswith(b"From: Mail Delivery System <MAILER-DAEMON@")
    assert (sent.queue_id, sent.message_id) == ("QORIG", "<orig@app.example>")
    assert (sent.dsn_sent.dsn_queue_id, sent.dsn_sent.to) == (dsn.queue_id, "alice@example.com")
    assert list(sent.dsn_sent.recipients) == ["bob@example.org"]
    assert sent.dsn_sent.action == message_pb2.DSN_ACTION_FAILED


async def test_a_delay_warning_is_recorded_as_such(kit, publisher) -> None:
    events = RecordingEvents()
    batcher = DsnBatcher(publisher, kit.HOSTNAME, window=3600, max_held=1, events=events)
    request = message_pb2.DsnRequest(
        queue_id="QORIG",
        sender="alice@example.com",
        action=message_pb2.DSN_ACTION_DELAYED,
        recipients=[message_pb2.DsnRecipient(recipient="bob@example.org", status="4.2.0", smtp_code=451)],
        job_id="QORIG.1",
    )
    request.arrival_time.FromDatetime(kit.NOW)
    request.last_attempt.FromDatetime(kit.NOW)
    async with asyncio.timeout(WAIT):
        await batcher.add(request)
    assert events.kinds() == ["received", "delay_warning_sent"]
    assert events.events[1].delay_warning_sent.action == message_pb2.DSN_ACTION_DELAYED


async def test_a_dsn_not_confirmed_records_nothing(kit, publisher) -> None:
    events = RecordingEvents()
    publisher.fail = True
    batcher = DsnBatcher(publisher, kit.HOSTNAME, window=3600, max_held=1, events=events)
    request = message_pb2.DsnRequest(
        queue_id="QORIG",
        sender="alice@example.com",
        action=message_pb2.DSN_ACTION_FAILED,
        recipients=[message_pb2.DsnRecipient(recipient="bob@example.org", status="5.1.1")],
    )
    with pytest.raises(PublishFailed):
        async with asyncio.timeout(WAIT):
            await batcher.add(request)
    assert events.events == []


def kit_decode(body: bytes) -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage.FromString(body)
