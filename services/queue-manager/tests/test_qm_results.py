"""The results consumer: retries, bounces, expiry, null senders and delay warnings."""

import email
import email.policy
from datetime import timedelta
from email.message import EmailMessage
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe
from kubemta_common.amqp.topology import DSN, ROUTE
from kubemta_common.errors import PermanentError, PublishFailed


def retries(publisher) -> list[tuple[str, message_pb2.DeliveryJob]]:
    return [
        (key, message_pb2.DeliveryJob.FromString(body))
        for key, body, _, kind in publisher.published
        if kind == "kubemta.v1.DeliveryJob"
    ]


def parse(dsn: message_pb2.AcceptedMessage) -> EmailMessage:
    return email.message_from_bytes(dsn.content, policy=email.policy.default)


def recipient_blocks(dsn: message_pb2.AcceptedMessage) -> list[EmailMessage]:
    status = next(part for part in parse(dsn).iter_parts() if part.get_content_type() == "message/delivery-status")
    return cast(list[EmailMessage], status.get_payload())[1:]


async def test_delivered_publishes_nothing(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"])
    await manager.handle_result(kit.result(job, [kit.delivered("bob@example.org")]))
    assert publisher.published == []


async def test_temporary_failure_retries_only_deferred_recipients(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org", "carol@example.org"], provider="other")
    result = kit.result(job, [kit.delivered("bob@example.org"), kit.deferred("carol@example.org")])

    await manager.handle_result(result)

    ((queue, retry),) = retries(publisher)
    assert queue == "retry.5m"
    assert list(retry.recipients) == ["carol@example.org"]
    assert retry.attempts == 1
    assert retry.job_id == job.job_id
    assert not retry.HasField("route"), "the route is looked up again on the next attempt"
    assert retry.content == job.content and retry.sender == job.sender
    assert retry.arrival_time == job.arrival_time
    assert kit.dsns(publisher) == []


@pytest.mark.parametrize(("attempts", "queue"), [(0, "retry.5m"), (1, "retry.10m"), (2, "retry.20m"), (7, "retry.20m")])
async def test_retry_queue_follows_the_schedule(kit, manager, publisher, attempts: int, queue: str) -> None:
    job = kit.job(["bob@example.org"], attempts=attempts)
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))

    ((key, retry),) = retries(publisher)
    assert key == queue
    assert retry.attempts == attempts + 1


async def test_permanent_failure_sends_a_dsn_from_null_sender_to_the_sender(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"])
    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))

    assert retries(publisher) == []
    (dsn,) = kit.dsns(publisher)
    assert dsn.sender == ""
    assert list(dsn.recipients) == ["alice@example.com"]
    assert dsn.generated
    assert dsn.queue_id and dsn.queue_id != job.queue_id
    assert dsn.arrival_time.ToDatetime().year == kit.NOW.year
    (key, _, message_id, kind) = publisher.published[0]
    assert (key, message_id, kind) == (DSN, f"{job.job_id}#0:failed", "kubemta.v1.DsnRequest")
    parsed = parse(dsn)
    assert parsed["To"] == "alice@example.com"
    assert parsed["Subject"] == "Undelivered Mail Returned to Sender"
    assert parsed["Message-ID"] == f"<{dsn.queue_id}@{kit.HOSTNAME}>"


async def test_mixed_result_gives_one_retry_and_one_dsn(kit, manager, publisher) -> None:
    rcpts = ["ok@example.org", "later@example.org", "gone@example.org", "gone2@example.org"]
    job = kit.job(rcpts)
    result = kit.result(
        job,
        [kit.delivered(rcpts[0]), kit.deferred(rcpts[1]), kit.bounced(rcpts[2]), kit.bounced(rcpts[3])],
    )

    await manager.handle_result(result)

    assert len(publisher.batches) == 1, "retry and DSN are confirmed together before the ack"
    ((_, retry),) = retries(publisher)
    assert list(retry.recipients) == ["later@example.org"]
    (dsn,) = kit.dsns(publisher)
    finals = [block["Final-Recipient"] for block in recipient_blocks(dsn)]
    assert finals == ["rfc822; gone@example.org", "rfc822; gone2@example.org"]


async def test_expired_message_bounces_with_4_4_7(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"], age=timedelta(days=5, seconds=1), attempts=30, delay_warning_sent=True)
    result = kit.result(job, [kit.deferred("bob@example.org", "4.2.0 Mailbox busy, try later")])

    await manager.handle_result(result)

    assert retries(publisher) == []
    (dsn,) = kit.dsns(publisher)
    (block,) = recipient_blocks(dsn)
    assert block["Action"] == "failed"
    assert block["Status"] == "4.4.7"
    assert block["Diagnostic-Code"] == "smtp; 451 4.2.0 Mailbox busy, try later"
    assert "expired" in cast(EmailMessage, next(parse(dsn).iter_parts())).get_content()


async def test_just_before_expiry_is_still_retried(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"], age=timedelta(days=5) - timedelta(seconds=1), delay_warning_sent=True)
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))
    assert len(retries(publisher)) == 1
    assert kit.dsns(publisher) == []


async def test_null_sender_is_never_bounced(kit, manager, publisher, caplog) -> None:
    job = kit.job(["bob@example.org", "carol@example.org"], sender="")
    expired_job = kit.job(["dave@example.org"], sender="", age=timedelta(days=6))

    await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))
    await manager.handle_result(kit.result(expired_job, [kit.deferred("dave@example.org")]))

    assert kit.dsns(publisher) == []
    ((_, retry),) = retries(publisher)
    assert list(retry.recipients) == ["carol@example.org"], "an unreported recipient is retried, not lost"
    assert sum("discarding" in record.getMessage() for record in caplog.records) == 2


async def test_generated_dsn_is_never_bounced(kit, manager, publisher) -> None:
    job = kit.job(["alice@example.com"], sender="", generated=True)
    await manager.handle_result(kit.result(job, [kit.bounced("alice@example.com")]))
    job = kit.job(["alice@example.com"], sender="odd@example.com", generated=True)
    await manager.handle_result(kit.result(job, [kit.bounced("alice@example.com")]))
    assert publisher.published == []


async def test_delay_warning_is_sent_once(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"], age=timedelta(hours=5), attempts=6)
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))

    ((_, retry),) = retries(publisher)
    assert retry.delay_warning_sent
    (warning,) = kit.dsns(publisher)
    parsed = parse(warning)
    assert parsed["Subject"] == "Delayed Mail (still being retried)"
    (block,) = recipient_blocks(warning)
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.2.0"
    assert block["Will-Retry-Until"]

    # The next result carries the flag: no second warning.
    publisher.batches.clear()
    retry.attempts += 1
    await manager.handle_result(kit.result(retry, [kit.deferred("bob@example.org")]))
    ((_, again),) = retries(publisher)
    assert again.delay_warning_sent
    assert kit.dsns(publisher) == []


@pytest.mark.parametrize(
    ("age", "sender", "warning_after"),
    [(timedelta(hours=3), "alice@example.com", "4h"), (timedelta(hours=5), "", "4h"), (timedelta(days=1), "a@b.c", 0)],
)
async def test_no_delay_warning(kit, make_manager, publisher, age, sender, warning_after) -> None:
    manager = make_manager(delay_warning_after=warning_after)
    job = kit.job(["bob@example.org"], age=age, sender=sender)
    await manager.handle_result(kit.result(job, [kit.deferred("bob@example.org")]))
    ((_, retry),) = retries(publisher)
    assert not retry.delay_warning_sent
    assert kit.dsns(publisher) == []


async def test_bounce_and_warning_in_one_result(kit, manager, publisher) -> None:
    job = kit.job(["later@example.org", "gone@example.org"], age=timedelta(hours=6))
    result = kit.result(job, [kit.deferred("later@example.org"), kit.bounced("gone@example.org")])

    await manager.handle_result(result)

    subjects = sorted(str(parse(dsn)["Subject"]) for dsn in kit.dsns(publisher))
    assert subjects == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]
    assert len(retries(publisher)) == 1


async def test_results_publish_failure_propagates(kit, manager, publisher) -> None:
    publisher.fail = True
    job = kit.job(["bob@example.org"])
    with pytest.raises(PublishFailed):
        await manager.handle_result(kit.result(job, [kit.bounced("bob@example.org")]))


async def test_undecodable_result_is_permanent(manager) -> None:
    class Incoming:
        body = b"\x08\x96\x01\xff\xff"
        message_id = "x"

    with pytest.raises(PermanentError):
        await subscribe(stages.RESULTS, manager.handle_result).on_delivery(cast(AbstractIncomingMessage, Incoming()))


async def test_result_without_job_is_permanent(manager) -> None:
    with pytest.raises(PermanentError):
        await manager.handle_result(message_pb2.DeliveryResult(reporter="delivery-worker"))


async def test_results_handler_reads_the_amqp_body(kit, manager, publisher) -> None:
    job = kit.job(["bob@example.org"])

    class Incoming:
        body = kit.result(job, [kit.deferred("bob@example.org")]).SerializeToString()
        message_id = "x"

    await subscribe(stages.RESULTS, manager.handle_result).on_delivery(cast(AbstractIncomingMessage, Incoming()))
    assert [key for key, *_ in publisher.published] == ["retry.5m"]
    assert ROUTE not in [key for key, *_ in publisher.published]
