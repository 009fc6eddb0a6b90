"""Splitting accepted messages into one delivery job per destination domain."""

import logging
from datetime import UTC, datetime
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe
from kubemta_common.amqp.topology import ROUTE
from kubemta_common.dsn_parameters import parse_recipient_dsn
from kubemta_common.errors import PermanentError, PublishFailed
from kubemta_common.splitter import group_by_domain, recipient_domain, split

ARRIVAL = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)


def undecodable(body: bytes) -> AbstractIncomingMessage:
    """A delivery whose body is not the stage's message."""

    class Incoming:
        message_id = "x"

    incoming = Incoming()
    incoming.body = body  # type: ignore[attr-defined]
    return cast(AbstractIncomingMessage, incoming)


def accepted(recipients: list[str], **fields: object) -> message_pb2.AcceptedMessage:
    message = message_pb2.AcceptedMessage(
        queue_id="QSPLIT",
        sender="alice@example.com",
        recipients=recipients,
        content=b"Subject: hi\r\n\r\nbody\r\n",
        client_address="192.0.2.1",
        client_helo="client.example.com",
        **fields,  # type: ignore[arg-type]
    )
    message.arrival_time.FromDatetime(ARRIVAL)
    return message


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_three_recipients_at_two_domains_give_two_jobs() -> None:
    jobs = split(accepted(["bob@example.org", "dave@example.net", "carol@example.org"]), "mx.test")

    assert [job.domain for job in jobs] == ["example.org", "example.net"]
    assert [list(job.recipients) for job in jobs] == [["bob@example.org", "carol@example.org"], ["dave@example.net"]]
    assert [job.job_id for job in jobs] == ["QSPLIT.1", "QSPLIT.2"]


def test_domains_are_case_insensitive_and_local_parts_kept() -> None:
    jobs = split(accepted(["Bob@Example.ORG", "carol@example.org", "Dave@EXAMPLE.org."]), "mx.test")

    assert len(jobs) == 1
    assert jobs[0].domain == "example.org"
    assert list(jobs[0].recipients) == ["Bob@Example.ORG", "carol@example.org", "Dave@EXAMPLE.org."]


def test_job_carries_the_envelope_content_and_flags() -> None:
    message = accepted(["bob@example.org"], smtputf8=True, generated=True)
    message.sender = ""

    (job,) = split(message, "mx.test")

    assert job.queue_id == "QSPLIT"
    assert job.sender == ""
    assert job.content == message.content
    assert job.arrival_time == message.arrival_time
    assert job.attempts == 0
    assert job.smtputf8 and job.generated
    assert not job.delay_warning_sent
    assert not job.HasField("route")


def test_job_ids_are_stable() -> None:
    message = accepted(["a@one.example", "b@two.example"])
    assert [job.job_id for job in split(message, "mx.test")] == [job.job_id for job in split(message, "mx.test")]


def test_duplicate_recipients_are_delivered_once() -> None:
    groups = group_by_domain(["bob@example.org", "bob@example.org", "carol@example.org"], "mx.test")
    assert groups == {"example.org": ["bob@example.org", "carol@example.org"]}


def test_unqualified_recipient_goes_to_the_default_domain() -> None:
    assert recipient_domain("postmaster", "MX.Kubemta.test") == "mx.kubemta.test"
    assert recipient_domain('"odd@local"@Example.org', "mx.test") == "example.org"


async def test_inbound_handler_publishes_all_jobs_to_route(manager, publisher, caplog) -> None:
    before_jobs = sample("kubemta_jobs_created_total")
    before_split = sample("kubemta_messages_split_total")
    message = accepted(["bob@example.org", "dave@example.net", "carol@example.org"])
    caplog.set_level(logging.DEBUG, logger="kubemta_queue_manager")

    await manager.handle_accepted(message)

    assert len(publisher.batches) == 1, "all jobs go in one publish_all batch"
    (batch,) = publisher.batches
    assert [(key, mid, kind) for key, _, mid, kind in batch] == [
        (ROUTE, "QSPLIT.1", "kubemta.v1.DeliveryJob"),
        (ROUTE, "QSPLIT.2", "kubemta.v1.DeliveryJob"),
    ]
    jobs = [message_pb2.DeliveryJob.FromString(body) for _, body, _, _ in batch]
    assert [list(job.recipients) for job in jobs] == [["bob@example.org", "carol@example.org"], ["dave@example.net"]]
    assert sample("kubemta_jobs_created_total") - before_jobs == 2
    assert sample("kubemta_messages_split_total") - before_split == 1
    records = [record for record in caplog.records if record.name.startswith("kubemta_queue_manager")]
    assert len(records) == 3, "one line for the message and one per job"
    assert all(record.levelno == logging.DEBUG for record in records), "the queued event is the INFO line"
    assert all(getattr(record, "queue_id", None) == "QSPLIT" for record in records)


async def test_inbound_handler_reads_the_amqp_body(manager, publisher) -> None:
    class Incoming:
        body = accepted(["bob@example.org"]).SerializeToString()
        message_id = "QSPLIT"

    await subscribe(stages.INBOUND, manager.handle_accepted).on_delivery(cast(AbstractIncomingMessage, Incoming()))

    assert [mid for _, _, mid, _ in publisher.published] == ["QSPLIT.1"]


async def test_inbound_publish_failure_propagates_and_counts_nothing(manager, publisher) -> None:
    publisher.fail = True
    before = sample("kubemta_jobs_created_total")

    with pytest.raises(PublishFailed):
        await manager.handle_accepted(accepted(["bob@example.org"]))

    assert sample("kubemta_jobs_created_total") == before


async def test_undecodable_inbound_payload_is_permanent(manager, publisher) -> None:
    with pytest.raises(PermanentError):
        garbage = undecodable(b"\xff\xff\xff not a protobuf")
        await subscribe(stages.INBOUND, manager.handle_accepted).on_delivery(garbage)
    assert publisher.published == []


async def test_message_without_recipients_publishes_nothing(manager, publisher) -> None:
    await manager.handle_accepted(accepted([]))
    assert publisher.batches == []


def test_jobs_carry_the_submitter_and_tags_for_webhooks() -> None:
    message = accepted(
        ["a@example.org", "b@example.net"], authenticated_user="system:serviceaccount:shop:checkout", tags=["order"]
    )
    jobs = split(message, "example.com")
    assert [job.submitter for job in jobs] == ["system:serviceaccount:shop:checkout"] * 2
    assert [list(job.tags) for job in jobs] == [["order"], ["order"]]


def given(notify: str | None, orcpt: str | None) -> message_pb2.RecipientDsn:
    parsed = parse_recipient_dsn(notify, orcpt)
    assert parsed is not None
    return parsed


def test_each_job_carries_its_own_recipients_dsn_parameters_and_the_message_envid_and_ret() -> None:
    message = message_pb2.AcceptedMessage(
        queue_id="QDSN",
        sender="alice@example.com",
        recipients=["a@one.example", "b@two.example", "c@one.example"],
        content=b"Subject: x\r\n\r\nbody\r\n",
        envid="ENV 1",
        ret=message_pb2.DSN_RET_FULL,
    )
    message.recipient_dsn["a@one.example"].CopyFrom(given("SUCCESS", "rfc822;A@one.example"))
    message.recipient_dsn["b@two.example"].CopyFrom(given("NEVER", None))

    one, two = split(message, "mx.kubemta.test")

    assert dict(one.recipient_dsn) == {"a@one.example": message.recipient_dsn["a@one.example"]}
    assert dict(two.recipient_dsn) == {"b@two.example": message.recipient_dsn["b@two.example"]}
    assert [(job.envid, job.ret) for job in (one, two)] == [("ENV 1", message_pb2.DSN_RET_FULL)] * 2
    assert "c@one.example" not in one.recipient_dsn  # no entry made up for a recipient that gave none
