"""Fixtures of the webhooks broker tests: in-process replicas (ServiceCore + WebhooksService on the test's vhost),
a queue-manager-like EventLog producer of fate events, and real HTTP receivers (tests/harness/webhook_receiver.py).

The RabbitMQ node and the vhost per test come from the shared plugin tests/harness/broker_fixtures.py. Test modules
cannot import each other (--import-mode=importlib), so the helpers reach the tests as fixtures.
"""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.service import ServiceCore
from kubemta_common.settings import ServiceSettings
from kubemta_webhooks.service import WebhooksService
from kubemta_webhooks.settings import WebhooksSettings
from tests.harness.rabbitmq import Vhost
from tests.harness.webhook_receiver import WebhookReceiver

APP = "system:serviceaccount:shop:billing"
OTHER_APP = "apikey:newsletter"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def fate_event(
    kind: str = "delivered", *, submitter: str = APP, tags: tuple[str, ...] = (), queue_id: str = ""
) -> events_pb2.LifecycleEvent:
    """A queue-manager fate event of a job with one recipient (EventLog stamps its id and time)."""
    queue_id = queue_id or "Q" + secrets.token_hex(4)
    event = events_pb2.LifecycleEvent(
        queue_id=queue_id, job_id=f"{queue_id}.example.org", submitter=submitter, tags=tags, message_id="<m@x>"
    )
    outcome = message_pb2.OUTCOME_DELIVERED if kind == "delivered" else message_pb2.OUTCOME_PERMANENT
    getattr(event, kind).CopyFrom(
        events_pb2.RecipientsFate(
            domain="example.org",
            recipients=[
                events_pb2.RecipientOutcome(recipient="bob@example.org", outcome=outcome, smtp_code=250, status="2.0.0")
            ],
        )
    )
    return event


class Replica:
    """A webhooks replica in this process."""

    def __init__(self, url: str, webhooks_file: Path, **settings: Any) -> None:
        values: dict[str, Any] = {
            "amqp_url": url,
            "metrics_listen": "",
            "log_format": "text",
            "webhooks_file": str(webhooks_file),
            "webhooks_reload_interval": "0.2s",
            "webhook_retry_tiers": "0.2s,0.5s",
            "webhook_leader_retry": "0.3s",
            "webhook_timeout": "1s",
            "webhook_checkpoint_interval": "0.2s",
            "drain_seconds": "1s",
        }
        values.update(settings)
        self.settings = WebhooksSettings.model_validate(values)
        self.core = ServiceCore("webhooks", self.settings)
        self.service = WebhooksService(self.settings, self.core)
        self.stopped = False

    async def start(self) -> "Replica":
        await self.core.start()
        await self.service.start()
        async with asyncio.timeout(30):
            await self.service.sending.wait()
        return self

    async def lead(self, *, within: float = 20.0) -> "Replica":
        """Wait until this replica reads the stream: its consumer is attached, so what the test appends next is read
        (on a first start the leader attaches at a time, and RabbitMQ may place a chunk appended while it attaches
        before the consumer's first offset: the test then waited for an event the leader never saw)."""
        async with asyncio.timeout(within):
            await self.service.leader.reading.wait()
        return self

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.service.stop()
        await self.core.close()


class Producer:
    """The queue-manager's EventLog on the vhost."""

    def __init__(self, url: str) -> None:
        settings = ServiceSettings.model_validate({"amqp_url": url, "metrics_listen": "", "log_format": "text"})
        self.core = ServiceCore("queue-manager", settings)

    async def start(self) -> "Producer":
        await self.core.start()
        async with asyncio.timeout(30):
            await self.core.broker.wait_ready()
        return self

    async def record_all(self, events: list[events_pb2.LifecycleEvent]) -> list[str]:
        """Record every event, insist each was confirmed; their event ids."""
        confirmed = await asyncio.gather(*(self.core.events.record(event) for event in events))
        assert all(confirmed)
        return [event.event_id for event in events]

    async def stop(self) -> None:
        await self.core.close()


@pytest.fixture
def kit() -> Callable[..., events_pb2.LifecycleEvent]:
    return fate_event


@pytest.fixture
async def producer(vhost: Vhost) -> AsyncIterator[Producer]:
    producer = await Producer(vhost.url).start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Any]]:
    """`await receivers()`: a started WebhookReceiver verifying SECRET (stopped after the test)."""
    started: list[WebhookReceiver] = []

    async def start() -> WebhookReceiver:
        receiver = WebhookReceiver(SECRET)
        started.append(receiver)
        return await receiver.start()

    try:
        yield start
    finally:
        for receiver in started:
            await receiver.stop()


@pytest.fixture
def endpoints_file(tmp_path: Path) -> Callable[..., Path]:
    """`endpoints_file(("billing", receiver, [APP]), ...)`: writes the endpoints file, returns its path."""
    path = tmp_path / "webhooks.json"

    def write(*entries: tuple[str, WebhookReceiver, list[str]], events: list[str] | None = None) -> Path:
        document = [
            {
                "name": name,
                "url": receiver.url,
                "secret": SECRET,
                "submitters": submitters,
                "events": events or ["delivered", "deferred", "bounced", "expired"],
            }
            for name, receiver, submitters in entries
        ]
        path.write_text(json.dumps(document))
        return path

    return write


@pytest.fixture
async def replicas(vhost: Vhost) -> AsyncIterator[Callable[..., Any]]:
    """`await replicas(path)`: a started replica reading the endpoints file `path` (stopped after the test)."""
    started: list[Replica] = []

    async def start(webhooks_file: Path, **settings: Any) -> Replica:
        replica = Replica(vhost.url, webhooks_file, **settings)
        started.append(replica)
        return await replica.start()

    try:
        yield start
    finally:
        for replica in started:
            await replica.stop()
