"""Factories shared by the queue-manager unit tests: settings, a fake publisher, jobs and results.

Test modules cannot import each other (--import-mode=importlib), so the helpers reach the
tests as the `kit` fixture.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.errors import PublishFailed
from kubemta_queue_manager.handlers import Outgoing, QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings

NOW = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
HOSTNAME = "mx.kubemta.test"
ORIGINAL = (
    b"Received: from client.example.com (client.example.com [192.0.2.1])\r\n"
    b"\tby mx.kubemta.test with ESMTP id ABC123\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <original-1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe report.\r\n"
)


class FakePublisher:
    """Records publish_all batches; raises PublishFailed when told to."""

    def __init__(self) -> None:
        self.batches: list[list[Outgoing]] = []
        self.fail = False

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        if self.fail:
            raise PublishFailed("no confirm from the broker within 10s")
        self.batches.append(list(messages))

    @property
    def published(self) -> list[Outgoing]:
        return [item for batch in self.batches for item in batch]

    def to(self, routing_key: str) -> list[Outgoing]:
        return [item for item in self.published if item[0] == routing_key]


def make_settings(**overrides: Any) -> QueueManagerSettings:
    values: dict[str, Any] = {
        "hostname": HOSTNAME,
        "retry_schedule": [300.0, 600.0, 1200.0],
        "max_queue_lifetime": 5 * 86400.0,
        "delay_warning_after": 4 * 3600.0,
    }
    values.update(overrides)
    return QueueManagerSettings(**values)


def make_job(
    recipients: Sequence[str],
    *,
    sender: str = "alice@example.com",
    age: timedelta = timedelta(minutes=10),
    attempts: int = 0,
    provider: str = "",
    delay_warning_sent: bool = False,
    generated: bool = False,
) -> message_pb2.DeliveryJob:
    domain = recipients[0].rpartition("@")[2]
    job = message_pb2.DeliveryJob(
        queue_id="QID1",
        job_id="QID1.1",
        sender=sender,
        domain=domain,
        recipients=list(recipients),
        content=ORIGINAL,
        attempts=attempts,
        delay_warning_sent=delay_warning_sent,
        generated=generated,
    )
    job.arrival_time.FromDatetime(NOW - age)
    if provider:
        job.route.CopyFrom(
            message_pb2.Route(
                kind=message_pb2.TRANSPORT_KIND_SMTP,
                hosts=[message_pb2.RouteHost(hostname="mx1." + domain, address="192.0.2.25", port=25)],
                provider=provider,
                source="mx",
            )
        )
    return job


def delivered(rcpt: str) -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(
        recipient=rcpt, outcome=message_pb2.OUTCOME_DELIVERED, smtp_code=250, status="2.0.0", diagnostic="2.0.0 Ok"
    )


def deferred(rcpt: str, diagnostic: str = "4.2.0 Mailbox busy, try later") -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(
        recipient=rcpt,
        outcome=message_pb2.OUTCOME_TEMPORARY,
        smtp_code=451,
        status="4.2.0",
        diagnostic=diagnostic,
        remote_mta="mx1.example.org",
    )


def bounced(rcpt: str) -> message_pb2.RecipientResult:
    return message_pb2.RecipientResult(
        recipient=rcpt,
        outcome=message_pb2.OUTCOME_PERMANENT,
        smtp_code=550,
        status="5.1.1",
        diagnostic="5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown",
        remote_mta="mx1.example.org",
    )


def make_result(
    job: message_pb2.DeliveryJob, recipients: Sequence[message_pb2.RecipientResult]
) -> message_pb2.DeliveryResult:
    result = message_pb2.DeliveryResult(job=job, recipients=list(recipients), reporter="delivery-worker")
    result.attempted_at.FromDatetime(NOW - timedelta(seconds=5))
    return result


class Kit:
    """The helpers above, handed to tests by the `kit` fixture."""

    NOW = NOW
    HOSTNAME = HOSTNAME
    ORIGINAL = ORIGINAL
    settings = staticmethod(make_settings)
    job = staticmethod(make_job)
    result = staticmethod(make_result)
    delivered = staticmethod(delivered)
    deferred = staticmethod(deferred)
    bounced = staticmethod(bounced)


@pytest.fixture
def kit() -> Kit:
    return Kit()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def make_manager(publisher: FakePublisher) -> Callable[..., QueueManager]:
    def factory(**overrides: Any) -> QueueManager:
        return QueueManager(make_settings(**overrides), publisher, clock=lambda: NOW)

    return factory


@pytest.fixture
def manager(make_manager: Callable[..., QueueManager]) -> QueueManager:
    return make_manager()
