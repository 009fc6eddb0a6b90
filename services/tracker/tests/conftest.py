"""Fixtures of the tracker tests: event builders (`kit`), an index on a temporary file, an API client over a
context without a broker, and, for the broker tests, in-process tracker replicas (the RabbitMQ node and the vhost
per test come from the shared plugin tests/harness/broker_fixtures.py).

Test modules cannot import each other (--import-mode=importlib), so the helpers reach the tests as fixtures.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.service import ServiceCore
from kubemta_common.settings import ServiceSettings
from kubemta_tracker.__main__ import TrackerCore, build
from kubemta_tracker.api import create_app
from kubemta_tracker.context import TrackerContext
from kubemta_tracker.index import Index
from kubemta_tracker.ingest import Ingest
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.sync import BarrierSync
from tests.harness.fake_events import RecordingEvents
from tests.harness.rabbitmq import Vhost

READ_TOKEN = "read-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)


class Kit:
    """Builders of lifecycle events and stream records."""

    T0 = T0
    READ = {"Authorization": f"Bearer {READ_TOKEN}"}
    ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def __init__(self) -> None:
        self._serial = 0

    def event(
        self, kind: str, payload: Any, *, queue_id: str, at: float, job_id: str = "", attempt: int = 0, **fields: Any
    ) -> events_pb2.LifecycleEvent:
        """One event of `kind` at T0 + `at` seconds."""
        self._serial += 1
        event = events_pb2.LifecycleEvent(
            event_id=f"ev{self._serial:08d}",
            service=fields.pop("service", "test"),
            source="test/1",
            queue_id=queue_id,
            job_id=job_id,
            attempt=attempt,
            message_id=fields.pop("message_id", ""),
        )
        event.time.FromDatetime(T0 + timedelta(seconds=at))
        getattr(event, kind).CopyFrom(payload)
        return event

    def received(
        self,
        queue_id: str,
        *,
        at: float = 0.0,
        sender: str = "alice@example.com",
        recipients: tuple[str, ...] = ("bob@example.org",),
        message_id: str = "",
        dedup_key: str = "",
        headers: bytes = b"Subject: hello\r\n",
    ) -> events_pb2.LifecycleEvent:
        received = events_pb2.Received(
            sender=sender,
            recipients=recipients,
            size=1234,
            client_address="192.0.2.1",
            client_helo="client.example.com",
            trust=message_pb2.TRUST_AUTHENTICATED,
            headers=headers,
            dedup_key=dedup_key,
            listener="smtp",
        )
        received.arrival_time.FromDatetime(T0 + timedelta(seconds=at))
        return self.event(
            "received", received, queue_id=queue_id, at=at, message_id=message_id or f"<{queue_id}@example.com>"
        )

    def queued(self, queue_id: str, jobs: dict[str, list[str]], *, at: float) -> events_pb2.LifecycleEvent:
        """`jobs`: {domain: recipients}; job ids are queue_id + "." + domain."""
        return self.event(
            "queued",
            events_pb2.Queued(
                jobs=[
                    events_pb2.QueuedJob(job_id=f"{queue_id}.{domain}", domain=domain, recipients=recipients)
                    for domain, recipients in jobs.items()
                ]
            ),
            queue_id=queue_id,
            at=at,
        )

    def job_event(
        self, kind: str, queue_id: str, domain: str, *, at: float, attempt: int = 0, **payload: Any
    ) -> events_pb2.LifecycleEvent:
        types: dict[str, Any] = {
            "routed": events_pb2.Routed,
            "attempted": events_pb2.Attempt,
            "delivered": events_pb2.RecipientsFate,
            "deferred": events_pb2.RecipientsFate,
            "bounced": events_pb2.RecipientsFate,
            "expired": events_pb2.RecipientsFate,
            "held": events_pb2.Held,
            "released": events_pb2.Released,
            "deleted": events_pb2.Deleted,
        }
        if kind in ("routed", "attempted", "delivered", "deferred", "bounced", "expired"):
            payload.setdefault("domain", domain)
        return self.event(
            kind, types[kind](**payload), queue_id=queue_id, job_id=f"{queue_id}.{domain}", at=at, attempt=attempt
        )

    @staticmethod
    def outcome(
        recipient: str, outcome: message_pb2.Outcome.ValueType = message_pb2.OUTCOME_DELIVERED
    ) -> events_pb2.RecipientOutcome:
        return events_pb2.RecipientOutcome(
            recipient=recipient, outcome=outcome, smtp_code=250, status="2.0.0", diagnostic="ok", remote_mta="mx"
        )

    @staticmethod
    def batch(*events: events_pb2.LifecycleEvent) -> bytes:
        return events_pb2.EventBatch(events=events).SerializeToString()

    def delivered_message(self, queue_id: str, *, at: float = 0.0, **received: Any) -> list[events_pb2.LifecycleEvent]:
        """The events of a message with one recipient at example.org, delivered at the first attempt."""
        rcpt = received.get("recipients", ("bob@example.org",))
        return [
            self.received(queue_id, at=at, **received),
            self.queued(queue_id, {"example.org": list(rcpt)}, at=at + 1),
            self.job_event("routed", queue_id, "example.org", at=at + 2, hosts=["mx.example.org[192.0.2.25]:25"]),
            self.job_event("attempted", queue_id, "example.org", at=at + 3, recipients=[self.outcome(r) for r in rcpt]),
            self.job_event("delivered", queue_id, "example.org", at=at + 4, recipients=[self.outcome(r) for r in rcpt]),
        ]


@pytest.fixture
def kit() -> Kit:
    return Kit()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[Index]:
    index = Index(tmp_path / "index.sqlite3")
    await index.open()
    try:
        yield index
    finally:
        await index.close()


def tracker_settings(**values: Any) -> TrackerSettings:
    values.setdefault("tracker_read_tokens", f"reader:{READ_TOKEN}")
    values.setdefault("tracker_admin_tokens", f"operator:{ADMIN_TOKEN}")
    values.setdefault("metrics_listen", "")
    values.setdefault("tracker_listen", "")
    values.setdefault("log_format", "text")
    values.setdefault("events_max_age", "3650d")  # the test events happened at T0, months ago: keep them
    return TrackerSettings(**values)


@pytest.fixture
async def make_client(index: Index) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """An API client over `index`, without a broker: barriers go to a RecordingEvents (never indexed unless the
    test indexes them), queue depths are {}."""
    clients: list[httpx.AsyncClient] = []

    def make(sync_timeout: float = 0.2, events: RecordingEvents | None = None) -> httpx.AsyncClient:
        sink = events or RecordingEvents(service="tracker")

        async def no_depths() -> dict[str, int]:
            return {}

        context = TrackerContext(
            settings=tracker_settings(sync_timeout=sync_timeout),
            index=index,
            barriers=BarrierSync(sink, sync_timeout),
            broker=cast(Broker, None),
            publisher=cast(Publisher, None),
            events=sink,
            queue_depths=no_depths,
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(context)), base_url="http://tracker")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


# -- broker tests ------------------------------------------------------------------------------------------------


class Replica:
    """A tracker replica in this process (index file, broker, ingest, API over ASGI)."""

    def __init__(self, url: str, index_path: Path, **settings: Any) -> None:
        self.settings = tracker_settings(amqp_url=url, index_path=index_path, **settings)
        self.core = TrackerCore(self.settings)
        self.index = Index(index_path)
        self.ingest: Ingest | None = None
        self.context: TrackerContext | None = None
        self._task: asyncio.Task[None] | None = None
        self.client: httpx.AsyncClient | None = None
        self.stopped = False

    async def start(self) -> "Replica":
        await self.index.open()
        await self.core.start()
        self.context, self.ingest = build(self.settings, self.core, self.index)
        self._task = asyncio.create_task(self.ingest.run())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(self.context)), base_url="http://tracker", timeout=10
        )
        async with asyncio.timeout(30):
            await self.ingest.caught_up.wait()
        return self

    async def get(self, path: str, **params: Any) -> httpx.Response:
        assert self.client is not None
        return await self.client.get(path, params=params, headers=Kit.READ)

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.client is not None:
            await self.client.aclose()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.index.close()
        await self.core.close()


class Producer:
    """A service's EventLog on the vhost (as the ingress or the queue-manager would publish)."""

    def __init__(self, url: str, name: str = "ingress") -> None:
        settings = ServiceSettings.model_validate(
            {"amqp_url": url, "metrics_listen": "", "log_format": "text", "events_max_age": "3650d"}
        )
        self.core = ServiceCore(name, settings)

    async def start(self) -> "Producer":
        await self.core.start()
        async with asyncio.timeout(30):
            await self.core.broker.wait_ready()
        return self

    async def record_all(self, events: list[events_pb2.LifecycleEvent]) -> None:
        """Record every event (concurrently: one or a few stream batches) and insist each was confirmed."""
        confirmed = await asyncio.gather(*(self.core.events.record(event) for event in events))
        assert all(confirmed)

    async def stop(self) -> None:
        await self.core.close()


@pytest.fixture
async def replicas(vhost: Vhost, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await replicas("a")`: a started replica with index file tmp_path/a.sqlite3 (stopped after the test)."""
    started: list[Replica] = []

    async def start(name: str, **settings: Any) -> Replica:
        replica = Replica(vhost.url, tmp_path / f"{name}.sqlite3", **settings)
        started.append(replica)
        return await replica.start()

    try:
        yield start
    finally:
        for replica in started:
            await replica.stop()


@pytest.fixture
async def producer(vhost: Vhost) -> AsyncIterator[Producer]:
    producer = await Producer(vhost.url).start()
    try:
        yield producer
    finally:
        await producer.stop()
