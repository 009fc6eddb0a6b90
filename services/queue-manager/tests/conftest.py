"""Factories shared by the queue-manager unit tests: settings, a fake publisher, jobs and results.

Test modules cannot import each other (--import-mode=importlib), so the helpers reach the
tests as the `kit` fixture.
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.message import Message

from kubemta.v1 import message_pb2
from kubemta_common.amqp.stages import Outgoing, Stage
from kubemta_common.amqp.topology import DSN
from kubemta_common.bus_messages import Encoded
from kubemta_common.errors import PublishFailed
from kubemta_queue_manager import dkim_cli
from kubemta_queue_manager.dsn_requests import dsn_message, merged_report
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings
from tests.harness.fake_events import RecordingEvents
from tests.harness.fake_tracker import FakeDecisions, FakeTracker

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


Record = tuple[str, bytes, str, str]
"""(the stage's queue, body, message id, message type) of one publish."""


class FakePublisher:
    """Records publish batches (a single publish is a batch of one); raises PublishFailed when told to.

    A raw publish (`publish_raw`: an admin-held job) is a batch of one too; its AMQP headers are kept in
    `headers` by message id."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.headers: dict[str, dict[str, str]] = {}
        self.fail = False

    async def publish_raw(
        self,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        message_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.fail:
            raise PublishFailed("no confirm from the broker within 10s")
        self.batches.append([(routing_key, body, message_id, message_type)])
        self.headers[message_id] = dict(headers or {})

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        await self.publish_all([stage.outgoing(message, message_id=message_id)])

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        if self.fail:
            raise PublishFailed("no confirm from the broker within 10s")
        self.batches.append([(out.stage.queue, out.body, out.message_id, out.message_type) for out in messages])

    @property
    def published(self) -> list[Record]:
        return [item for batch in self.batches for item in batch]

    def to(self, routing_key: str) -> list[Record]:
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


def dsn_requests(publisher: FakePublisher) -> list[message_pb2.DsnRequest]:
    """The DSN requests the handlers published to the `dsn` stage."""
    return [message_pb2.DsnRequest.FromString(body) for _, body, _, _ in publisher.to(DSN)]


def sent_dsns(publisher: FakePublisher) -> list[message_pb2.AcceptedMessage]:
    """The DSNs the `dsn` stage would send for the published requests: one per message and action (the batcher's
    grouping, with all requests inside one window), built by the batcher's own functions."""
    groups: dict[tuple[str, int], list[message_pb2.DsnRequest]] = {}
    for request in dsn_requests(publisher):
        groups.setdefault((request.queue_id, int(request.action)), []).append(request)
    return [
        dsn_message(merged_report(requests, HOSTNAME), queue_id=f"DSN{number}", now=NOW)
        for number, requests in enumerate(groups.values(), start=1)
    ]


@dataclass
class FakeDelivery:
    """The facts of an AMQP delivery the handlers read: the redelivered flag and the headers."""

    body: bytes = b""
    redelivered: bool = False
    headers: dict[str, Any] = field(default_factory=dict)


def delivery(*, redelivered: bool = False, count: int = 0) -> AbstractIncomingMessage:
    headers = {"x-delivery-count": count} if count else {}
    return cast(AbstractIncomingMessage, FakeDelivery(redelivered=redelivered, headers=headers))


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
    dsn_requests = staticmethod(dsn_requests)
    dsns = staticmethod(sent_dsns)
    delivery = staticmethod(delivery)


@pytest.fixture
def kit() -> Kit:
    return Kit()


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents(service="queue-manager")


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def decisions() -> FakeDecisions:
    return FakeDecisions()


@pytest.fixture
def make_manager(
    publisher: FakePublisher, events: RecordingEvents, tracker: FakeTracker, decisions: FakeDecisions
) -> Callable[..., QueueManager]:
    def factory(**overrides: Any) -> QueueManager:
        return QueueManager(
            make_settings(**overrides),
            publisher,
            events=events,
            clock=lambda: NOW,
            tracker=tracker,
            decisions=decisions,
        )

    return factory


@pytest.fixture
def manager(make_manager: Callable[..., QueueManager]) -> QueueManager:
    return make_manager()


OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"
NETNS_DRIVER = Path(__file__).with_name("opendkim_netns_driver.py")


def opendkim_unavailable() -> str | None:
    """Why opendkim-testmsg cannot run here, or None."""
    if not os.access(OPENDKIM_TESTMSG, os.X_OK):
        return "opendkim-testmsg is not installed (Debian package opendkim-tools)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is missing"
    if subprocess.run(["unshare", "-rmn", "true"], capture_output=True).returncode != 0:
        return "cannot create user/mount/network namespaces (unshare -rmn)"
    return None


class DkimZone:
    """Keys made with the real CLI in `keys_dir`, and the DNS TXT records it printed for them."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self.records: dict[str, list[str]] = {}
        self.printed: list[str] = []

    def generate(self, domain: str, selector: str, algorithm: str = "rsa") -> str:
        """Run `dkim generate` and publish the record it printed; the printed line."""
        out = io.StringIO()
        argv = ["dkim", "generate", "--domain", domain, "--selector", selector, "--algorithm", algorithm]
        with contextlib.redirect_stdout(out):
            status = dkim_cli.main([*argv, "--keys-dir", str(self.keys_dir)])
        assert status == 0
        line = out.getvalue().strip()
        self.printed.append(line)
        name = line.split(" ", 1)[0].rstrip(".").lower()
        self.records[name] = re.findall(r'"([^"]*)"', line)
        return line

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes:
        """dkimpy's DNS lookup: the TXT strings of `name`, joined (RFC 6376 §3.6.2.2)."""
        strings = self.records.get(name.decode("ascii").rstrip(".").lower())
        return "".join(strings).encode("ascii") if strings is not None else b""

    def opendkim_testmsg(self, message: bytes, work: Path) -> tuple[int, str]:
        """Verify `message` with OpenDKIM's opendkim-testmsg, its keys from these records; (status, stderr)."""
        reason = opendkim_unavailable()
        if reason is not None:
            pytest.fail(f"{reason}: make test installs it (scripts/system-deps.sh)")
        work.mkdir(exist_ok=True)
        (work / "records.json").write_text(json.dumps(self.records))
        (work / "message.eml").write_bytes(message)
        args = [str(work / "records.json"), str(work / "message.eml"), str(work / "resolv.conf")]
        done = subprocess.run(
            ["unshare", "-rmn", sys.executable, str(NETNS_DRIVER), *args], capture_output=True, timeout=60, check=True
        )
        result = json.loads(done.stdout)
        return int(result["returncode"]), str(result["stderr"])


@pytest.fixture
def dkim_zone(tmp_path: Path) -> DkimZone:
    return DkimZone(tmp_path / "dkim-keys")
