"""Duplicates after a crash, against the real broker: the ingress answers a client's retry of a message it
already queued with the first queue id, and the delivery worker does not send a redelivered job again to the
recipients recorded as delivered.

The ingress and the worker run in this process on a test vhost (their real handlers, broker connection,
publisher and event log); the tracker is a stand-in on loopback that indexes the `events` stream (a
StreamReader) and answers the two duplicate endpoints of the tracker API after a barrier sync (its own barrier
event, confirmed, then read back), as the contract of issue 14 describes. Clients are smtplib and real SMTP
peers on loopback addresses.
"""

import asyncio
import secrets
import smtplib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI, Header, HTTPException
from google.protobuf.json_format import MessageToDict

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer, subscribe_deliveries
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import EVENTS, StreamRetention
from kubemta_common.amqp.topology import DELIVER, INBOUND, RESULTS
from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import PublishFailed
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.events.stream_reader import StreamReader, StreamRecord
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.http_server import HttpServer
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.tls import opportunistic_tls_context
from kubemta_delivery_worker.transaction import SmtpOptions
from kubemta_ingress.__main__ import build_servers
from kubemta_ingress.server import SmtpServer
from kubemta_ingress.settings import IngressSettings
from tests.harness.ports import free_port
from tests.harness.queues import first_message, take_all
from tests.harness.rabbitmq import Vhost
from tests.harness.smtp_peer import ScriptedPeer

pytestmark = pytest.mark.broker

TOKEN = "stand-in-tracker-read-token"
RETENTION = StreamRetention(events_max_age=3600.0, events_max_bytes=100_000_000, decisions_max_age=3600.0)
WITHIN = 30.0
"""Bound of every wait in these tests."""


def make_broker(url: str, name: str) -> Broker:
    return Broker(url, name=name, retry_delays=(1.0,), reconnect_interval=0.2, retention=RETENTION)


def make_events(broker: Broker, service: str) -> EventLog:
    return EventLog(broker, service=service, buffer=10_000, confirm_timeout=5.0, publish_timeout=5.0)


class StandInTracker:
    """The tracker's duplicate endpoints over an index of the `events` stream, on 127.0.0.1."""

    def __init__(self, url: str) -> None:
        self.broker = make_broker(url, "stand-in-tracker")
        self.events = make_events(self.broker, "tracker")
        self.reader = StreamReader(self.broker, EVENTS, self._index, start="first", prefetch=200)
        self.received: dict[str, str] = {}
        self.delivered: dict[str, dict[str, events_pb2.RecipientOutcome]] = {}
        self.kinds: list[str] = []
        self.requests: list[str] = []
        self._barriers: set[str] = set()
        self._indexed = asyncio.Condition()
        self.port = free_port("127.0.0.1")
        self._http = HttpServer(self._app(), ListenAddress("127.0.0.1", self.port))
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.broker.run()))
        async with asyncio.timeout(WITHIN):
            await self.broker.wait_ready()
        self.events.start()
        self._tasks.append(asyncio.create_task(self.reader.run()))
        await self._http.start()

    async def stop(self) -> None:
        await self._http.stop()
        await self.events.close(drain_seconds=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.broker.close()

    async def _index(self, records: list[StreamRecord]) -> None:
        for record in records:
            for event in events_pb2.EventBatch.FromString(record.body).events:
                kind = event_kind(event)
                self.kinds.append(kind)
                if kind == "received" and event.received.dedup_key:
                    self.received.setdefault(event.received.dedup_key, event.queue_id)
                elif kind == "attempted":
                    done = self.delivered.setdefault(event.job_id, {})
                    for outcome in event.attempted.recipients:
                        if outcome.outcome == message_pb2.OUTCOME_DELIVERED:
                            done[outcome.recipient] = outcome
                elif kind == "barrier":
                    self._barriers.add(event.barrier.nonce)
        async with self._indexed:
            self._indexed.notify_all()

    async def sync(self) -> None:
        """Everything confirmed on the stream before now is indexed (else 503)."""
        nonce = secrets.token_hex(8)
        event = events_pb2.LifecycleEvent()
        event.barrier.nonce = nonce
        if not await self.events.record(event):
            raise HTTPException(503, "barrier not confirmed")
        try:
            async with asyncio.timeout(5.0), self._indexed:
                await self._indexed.wait_for(lambda: nonce in self._barriers)
        except TimeoutError:
            raise HTTPException(503, "barrier sync timed out") from None

    async def wait_for_kind(self, kind: str) -> None:
        async with asyncio.timeout(WITHIN), self._indexed:
            await self._indexed.wait_for(lambda: kind in self.kinds)

    def _app(self) -> FastAPI:
        app = FastAPI()

        def authorize(authorization: str | None) -> None:
            if authorization != f"Bearer {TOKEN}":
                raise HTTPException(401, "no or a wrong token")

        @app.get("/v1/duplicates/received/{dedup_key}")
        async def received(dedup_key: str, within: float, authorization: str | None = Header(None)) -> Any:
            authorize(authorization)
            self.requests.append(f"received {dedup_key}")
            await self.sync()
            queue_id = self.received.get(dedup_key)
            if queue_id is None:
                raise HTTPException(404, "no such message")
            return {"queue_id": queue_id}

        @app.get("/v1/duplicates/jobs/{job_id}/delivered")
        async def delivered(job_id: str, authorization: str | None = Header(None)) -> Any:
            authorize(authorization)
            self.requests.append(f"delivered {job_id}")
            await self.sync()
            outcomes = self.delivered.get(job_id, {}).values()
            return {"recipients": [MessageToDict(o, preserving_proto_field_name=True) for o in outcomes]}

        return app


@pytest.fixture
async def tracker(vhost: Vhost) -> AsyncIterator[StandInTracker]:
    stand_in = StandInTracker(vhost.url)
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


# -- ingress ---------------------------------------------------------------------------------------------------


@dataclass
class RunningIngress:
    port: int
    broker: Broker
    events: EventLog
    client: TrackerClient
    servers: list[SmtpServer]


@pytest.fixture
async def ingress(vhost: Vhost, tracker: StandInTracker) -> AsyncIterator[RunningIngress]:
    port = free_port("127.0.0.1")
    values: dict[str, Any] = {  # as the environment gives them: strings, parsed by the settings
        "amqp_url": vhost.url,
        "hostname": "mx.kubemta.test",
        "smtp_listen": f"127.0.0.1:{port}",
        "metrics_listen": "",
        "local_domains": "example.org",
        "relay_networks": "127.0.0.0/8",
        "tracker_url": tracker.url,
        "tracker_token": TOKEN,
        "tracker_timeout": 10.0,
        "duplicate_window": "1h",
    }
    settings = IngressSettings(**values)
    broker = make_broker(vhost.url, "ingress")
    broker_task = asyncio.create_task(broker.run())
    async with asyncio.timeout(WITHIN):
        await broker.wait_ready()
    events = make_events(broker, "ingress")
    events.start()
    client = TrackerClient.from_settings(settings)
    assert client is not None
    servers = build_servers(settings, Publisher(broker, 5.0), None, events=events, tracker=client)
    for server in servers:
        await server.start()
    try:
        yield RunningIngress(port, broker, events, client, servers)
    finally:
        for server in servers:
            await server.stop(1.0)
        await client.close()
        await events.close(drain_seconds=1.0)
        broker_task.cancel()
        await asyncio.gather(broker_task, return_exceptions=True)
        await broker.close()


def smtp_send(port: int, sender: str, recipients: list[str], content: bytes) -> tuple[int, str]:
    """One transaction with smtplib; the reply to the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=WITHIN) as client:
        client.ehlo("client.example")
        assert client.mail(sender)[0] == 250
        for rcpt in recipients:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(content)
        return code, text.decode()


async def send(port: int, content: bytes, sender: str = "a@example.net", rcpts: tuple[str, ...] = ()) -> str:
    code, text = await asyncio.to_thread(smtp_send, port, sender, list(rcpts or ("bob@example.org",)), content)
    assert code == 250, text
    assert text.startswith("2.0.0 Ok: queued as "), text
    return text.removeprefix("2.0.0 Ok: queued as ")


async def accepted_on(url: str, queue: str) -> list[message_pb2.AcceptedMessage]:
    """Every message on `queue` now (taken): the publishes were confirmed before their 250, so all are there."""
    return [message_pb2.AcceptedMessage.FromString(body) for body in await take_all(url, queue, WITHIN)]


def message(message_id: str | None, body: str = "Hello.") -> bytes:
    header = f"Message-ID: {message_id}\r\n" if message_id is not None else ""
    return f"From: a@example.net\r\nTo: bob@example.org\r\n{header}Subject: retry\r\n\r\n{body}\r\n".encode()


async def test_a_client_retry_gets_the_first_queue_id_and_is_queued_once(
    vhost: Vhost, ingress: RunningIngress, tracker: StandInTracker
) -> None:
    first = await send(ingress.port, message("<retry-1@example.net>"))
    again = await send(ingress.port, message("<retry-1@example.net>"))
    assert again == first
    [queued] = await accepted_on(vhost.url, INBOUND)
    assert queued.queue_id == first and queued.message_id == "<retry-1@example.net>" and queued.listener == "smtp"
    await tracker.wait_for_kind("duplicate")  # the retry is on the stream too

    others = [
        await send(ingress.port, message("<retry-1@example.net>", body="Another body.")),
        await send(ingress.port, message("<retry-1@example.net>"), rcpts=("bob@example.org", "eve@example.org")),
        await send(ingress.port, message("<retry-1@example.net>"), sender="other@example.net"),
        await send(ingress.port, message(None)),
        await send(ingress.port, message(None)),
    ]
    assert len({first, *others}) == 6, "every other message was queued as a message of its own"
    assert sorted(m.queue_id for m in await accepted_on(vhost.url, INBOUND)) == sorted(others)


# -- delivery worker -------------------------------------------------------------------------------------------


class FailsFirstResult(Publisher):
    """The real publisher, except that the first result publish fails, as if the worker died right after the
    attempt was recorded: the job goes back to `deliver` and is delivered again."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker, 5.0)
        self.failed = 0

    async def publish(self, stage: Any, message: Any, *, message_id: str) -> None:
        if stage is stages.RESULTS and not self.failed:
            self.failed += 1
            raise PublishFailed("injected: the worker died before its result was confirmed")
        await super().publish(stage, message, message_id=message_id)


@pytest.fixture
async def worker(vhost: Vhost, tracker: StandInTracker) -> AsyncIterator[FailsFirstResult]:
    broker = make_broker(vhost.url, "delivery-worker")
    broker_task = asyncio.create_task(broker.run())
    async with asyncio.timeout(WITHIN):
        await broker.wait_ready()
    events = make_events(broker, "delivery-worker")
    events.start()
    client = TrackerClient(tracker.url, TOKEN, 10.0)
    publisher = FailsFirstResult(broker)
    options = SmtpOptions(
        ehlo_name="worker.kubemta.test",
        tls_context=opportunistic_tls_context(),
        connect_timeout=5.0,
        command_timeout=5.0,
        data_timeout=5.0,
    )
    handler = DeliverHandler(Deliverer(options), publisher, events=events, tracker=client)
    consumer = Consumer(
        broker, DELIVER, subscribe_deliveries(stages.DELIVER, handler).on_delivery, prefetch=1, retry_pause=0.1
    )
    await consumer.start()
    try:
        yield publisher
    finally:
        await consumer.stop(1.0)
        await client.close()
        await events.close(drain_seconds=1.0)
        broker_task.cancel()
        await asyncio.gather(broker_task, return_exceptions=True)
        await broker.close()


def job_to(peer: ScriptedPeer, recipients: list[str]) -> message_pb2.DeliveryJob:
    host = message_pb2.RouteHost(hostname="mx1.dest.test", address=peer.address, port=peer.port)
    job = message_pb2.DeliveryJob(
        queue_id="REDELIVERED1",
        job_id="REDELIVERED1.dest.test",
        sender="alice@sender.test",
        domain="dest.test",
        recipients=recipients,
        content=b"From: alice@sender.test\r\nSubject: once\r\n\r\nOnce only.\r\n",
        attempts=0,
        message_id="<once@sender.test>",
        route=message_pb2.Route(kind=message_pb2.TRANSPORT_KIND_SMTP, hosts=[host], source="mx"),
    )
    job.arrival_time.GetCurrentTime()
    return job


@pytest.fixture
async def peer(loopback_net: str) -> AsyncIterator[ScriptedPeer]:
    started = ScriptedPeer(f"{loopback_net}.{secrets.randbelow(200) + 30}", 0, rules={"later": "451 4.2.0 Try later"})
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_a_job_redelivered_after_its_attempt_is_not_sent_again(
    vhost: Vhost, worker: FailsFirstResult, tracker: StandInTracker, peer: ScriptedPeer
) -> None:
    job = job_to(peer, ["bob@dest.test", "carol@dest.test"])
    # bob asked for a success DSN the peer (no DSN offered) cannot take over: the job's result goes to `results`
    # (delivered everywhere with no DSN owed, it would end at the worker: test_worker_ends_delivered_jobs.py)
    job.recipient_dsn["bob@dest.test"].CopyFrom(message_pb2.RecipientDsn(notify_given=True, notify_success=True))
    await Publisher(worker._broker, 5.0).publish(stages.DELIVER, job, message_id=job.job_id)

    result = message_pb2.DeliveryResult.FromString((await first_message(vhost.url, RESULTS, within=WITHIN)).body)

    assert worker.failed == 1, "the first result was lost and the job delivered again"
    assert [(m.rcpt_tos, m.content.endswith(b"Once only.\r\n")) for m in peer.messages] == [
        (["bob@dest.test", "carol@dest.test"], True)
    ], "the peer got the message once"
    assert [(r.recipient, r.outcome) for r in result.recipients] == [
        ("bob@dest.test", message_pb2.OUTCOME_DELIVERED),
        ("carol@dest.test", message_pb2.OUTCOME_DELIVERED),
    ]
    assert tracker.requests == ["delivered REDELIVERED1.dest.test"]
    await tracker.wait_for_kind("duplicate")
    assert tracker.kinds.count("attempted") == 1


async def test_a_redelivered_job_sends_only_to_the_recipients_not_yet_delivered(
    vhost: Vhost, worker: FailsFirstResult, tracker: StandInTracker, peer: ScriptedPeer
) -> None:
    job = job_to(peer, ["bob@dest.test", "later@dest.test"])
    await Publisher(worker._broker, 5.0).publish(stages.DELIVER, job, message_id=job.job_id)

    result = message_pb2.DeliveryResult.FromString((await first_message(vhost.url, RESULTS, within=WITHIN)).body)

    assert worker.failed == 1 and tracker.requests == ["delivered REDELIVERED1.dest.test"]
    assert [m.rcpt_tos for m in peer.messages] == [["bob@dest.test"]], "bob got it once"
    assert [(r.recipient, r.outcome) for r in result.recipients] == [
        ("bob@dest.test", message_pb2.OUTCOME_DELIVERED),
        ("later@dest.test", message_pb2.OUTCOME_TEMPORARY),
    ]
    assert result.job.content == job.content, "the job travels back whole: later@ is still to be retried"
    await tracker.wait_for_kind("duplicate")
    assert tracker.kinds.count("attempted") == 2
