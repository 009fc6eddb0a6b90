"""The queue-manager's and the resolver's lifecycle events, redelivery guards and admin decisions against the real
broker.

Redelivery: a bus message taken by a consumer that died before acknowledging it comes back with the `redelivered`
flag; the handlers then ask the tracker (here a stand-in HTTP server on loopback answering the contract's
`/v1/duplicates/recorded`) whether the work was recorded, and acknowledge without publishing when it was. The
handlers run in-process on the real `Consumer`, with the real `EventLog` publishing to the `events` stream and the
real `TrackerClient`.

Decisions: a DELETE or HOLD decision appended to the `decisions` stream before the dns-resolver process starts is
honoured by it (its DecisionFollower reads the stream from the first record): the deleted job goes nowhere (or, with
a DSN asked for, to `results` as a 5.3.0 failure), the held one to `held` with the release headers, the rest is
routed.
"""

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer, subscribe_deliveries
from kubemta_common.amqp.held import DECISION_ID, JOB_ID, QUEUE_ID, RELEASE_TO
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import DECISIONS, EVENTS, StreamRetention
from kubemta_common.amqp.topology import DELIVER, DSN, HELD, INBOUND, RESULTS, ROUTE
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.events.stream_reader import StreamReader, StreamRecord
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_dns_resolver.checks import JobChecks
from kubemta_dns_resolver.handler import RouteHandler
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings
from tests.harness.ports import free_port
from tests.harness.queues import first_message
from tests.harness.rabbitmq import Vhost
from tests.harness.stack import Stack

pytestmark = pytest.mark.broker

WAIT = 30.0
TOKEN = "read-token-for-the-test"


class StandInTracker:
    """Answers GET /v1/duplicates/recorded from `recorded` (keys: kind, queue_id, job_id, attempt as sent), 401
    without the bearer token; keeps every query."""

    def __init__(self) -> None:
        self.recorded: set[tuple[str, str, str, str]] = set()
        self.queries: list[dict[str, str]] = []
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._answer(401, {"detail": "unauthorised"})
                elif url.path != "/v1/duplicates/recorded":
                    self._answer(404, {"detail": "not found"})
                else:
                    tracker.queries.append(query)
                    key = tuple(query.get(name, "") for name in ("kind", "queue_id", "job_id", "attempt"))
                    self._answer(200, {"recorded": key in tracker.recorded})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> "StandInTracker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def tracker_server() -> Iterator[StandInTracker]:
    with StandInTracker() as server:
        yield server


async def connected(url: str, name: str = "test") -> Broker:
    retention = StreamRetention(events_max_age=3600, events_max_bytes=10**8, decisions_max_age=3600)
    broker = Broker(url, name=name, retry_delays=(300.0,), reconnect_interval=0.2, retention=retention)
    async with asyncio.timeout(WAIT):
        await broker.run()  # returns once connected and the topology (streams included) is declared
    return broker


async def redeliver(url: str, queue: str) -> None:
    """Take the next message of `queue` without acknowledging it and close the channel: the broker returns it,
    flagged as redelivered (a consumer that crashed before its ack)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        source = await channel.get_queue(queue)
        async with asyncio.timeout(WAIT):
            message = await source.get(fail=False)
            while message is None:
                await asyncio.sleep(0.02)
                message = await source.get(fail=False)
        assert not message.redelivered
    finally:
        await connection.close()


async def depths(url: str, *queues: str) -> tuple[int, ...]:
    """Messages ready in each queue (a passive declare: exact at once, unlike the management statistics)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        counts = []
        for name in queues:
            declared = await channel.declare_queue(name, passive=True)
            counts.append(declared.declaration_result.message_count or 0)
        return tuple(counts)
    finally:
        await connection.close()


async def consume_once(
    broker: Broker, queue: str, on_delivery: Callable[[aio_pika.abc.AbstractIncomingMessage], Awaitable[None]]
) -> list[bool]:
    """Run a real Consumer on `queue` until it handled one delivery; the `redelivered` flags it saw."""
    seen: list[bool] = []
    handled = asyncio.Event()

    async def handle(delivery: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(bool(delivery.redelivered))
        try:
            await on_delivery(delivery)
        finally:
            handled.set()

    consumer = Consumer(broker, queue, handle, prefetch=1)
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT):
            await handled.wait()
    finally:
        await consumer.stop(5)
    return seen


async def stream_events(
    url: str, done: Callable[[list[events_pb2.LifecycleEvent]], bool]
) -> list[events_pb2.LifecycleEvent]:
    """The `events` stream from its first record, read until `done` says enough (bounded)."""
    broker = await connected(url, "reader")
    events: list[events_pb2.LifecycleEvent] = []
    enough = asyncio.Event()

    async def handle(records: list[StreamRecord]) -> None:
        for record in records:
            events.extend(events_pb2.EventBatch.FromString(record.body).events)
        if done(events):
            enough.set()

    reader = asyncio.create_task(StreamReader(broker, EVENTS, handle, start="first").run())
    try:
        async with asyncio.timeout(WAIT):
            await enough.wait()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await close(broker)
    return events


async def close(broker: Broker) -> None:
    await broker.close()


def kinds_of(events: list[events_pb2.LifecycleEvent], service: str) -> list[str]:
    return [event_kind(event) for event in events if event.service == service]


def qm_settings() -> QueueManagerSettings:
    return QueueManagerSettings(hostname="mx.kubemta.test", retry_schedule=[300.0], delay_warning_after=1.0)


def the_job(queue_id: str, domain: str = "example.org", attempts: int = 1) -> message_pb2.DeliveryJob:
    job = message_pb2.DeliveryJob(
        queue_id=queue_id,
        job_id=f"{queue_id}.1",
        sender="alice@example.com",
        domain=domain,
        recipients=[f"bob@{domain}"],
        content=b"Subject: hi\r\n\r\nhello\r\n",
        attempts=attempts,
        message_id=f"<{queue_id}@example.com>",
    )
    job.arrival_time.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    return job


async def issue(
    publisher: Publisher,
    decision_id: str,
    verb: "events_pb2.DecisionVerb.ValueType",
    selector: events_pb2.Selector,
    *,
    dsn: bool,
    at: datetime,
) -> None:
    """Append an operator's decision (actor "ops", decided `at`) to the `decisions` stream, confirmed."""
    decision = events_pb2.AdminDecision(decision_id=decision_id, actor="ops", verb=verb, dsn=dsn, selector=selector)
    decision.time.FromDatetime(at)
    await publisher.publish_raw(
        DECISIONS, decision.SerializeToString(), message_id=decision_id, message_type="kubemta.v1.AdminDecision"
    )


class Services:
    """A connected broker, its publisher, an EventLog on the `events` stream, and the TrackerClient of the
    stand-in tracker."""

    def __init__(self, broker: Broker, tracker_url: str, service: str) -> None:
        self.broker = broker
        self.publisher = Publisher(broker, 5)
        self.events = EventLog(broker, service=service, buffer=1000, confirm_timeout=5, publish_timeout=5)
        self.tracker = TrackerClient(tracker_url, TOKEN, 5)

    async def __aenter__(self) -> "Services":
        self.events.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.events.close(5)
        await self.tracker.close()
        await close(self.broker)


async def test_a_redelivered_inbound_message_recorded_as_queued_is_not_queued_again(
    vhost: Vhost, tracker_server: StandInTracker
) -> None:
    tracker_server.recorded.add(("queued", "QDUP", "", ""))
    async with Services(await connected(vhost.url), tracker_server.url, "queue-manager") as world:
        manager = QueueManager(qm_settings(), world.publisher, events=world.events, tracker=world.tracker)
        on_delivery = subscribe_deliveries(stages.INBOUND, manager.handle_accepted).on_delivery
        for queue_id in ("QDUP", "QNEW"):
            accepted = message_pb2.AcceptedMessage(
                queue_id=queue_id,
                sender="alice@example.com",
                recipients=["bob@example.org"],
                content=b"Subject: hi\r\n\r\nhello\r\n",
                message_id=f"<{queue_id}@example.com>",
            )
            await world.publisher.publish(stages.INBOUND, accepted, message_id=queue_id)
            await redeliver(vhost.url, INBOUND)
            assert await consume_once(world.broker, INBOUND, on_delivery) == [True]
    assert tracker_server.queries == [{"kind": "queued", "queue_id": "QDUP"}, {"kind": "queued", "queue_id": "QNEW"}]
    assert await depths(vhost.url, INBOUND, ROUTE) == (0, 1), "QDUP acknowledged without a job; QNEW queued its job"
    job = message_pb2.DeliveryJob.FromString((await first_message(vhost.url, ROUTE)).body)
    assert (job.queue_id, job.message_id) == ("QNEW", "<QNEW@example.com>")
    events = await stream_events(vhost.url, lambda got: len(got) >= 2)
    assert [(event_kind(e), e.queue_id) for e in events] == [("duplicate", "QDUP"), ("queued", "QNEW")]
    assert events[0].duplicate.reason == "redelivered-input"


async def test_a_redelivered_result_whose_fate_was_recorded_is_not_handled_again(
    vhost: Vhost, tracker_server: StandInTracker
) -> None:
    tracker_server.recorded.add(("fate", "", "QRES.1", "2"))
    async with Services(await connected(vhost.url), tracker_server.url, "queue-manager") as world:
        manager = QueueManager(qm_settings(), world.publisher, events=world.events, tracker=world.tracker)
        on_delivery = subscribe_deliveries(stages.RESULTS, manager.handle_result).on_delivery
        for attempts in (2, 3):  # the fate of attempt 2 was recorded; attempt 3's was not
            job = the_job("QRES", attempts=attempts)
            result = message_pb2.DeliveryResult(
                job=job,
                recipients=[
                    message_pb2.RecipientResult(
                        recipient="bob@example.org", outcome=message_pb2.OUTCOME_TEMPORARY, status="4.2.0"
                    )
                ],
                reporter="delivery-worker",
            )
            await world.publisher.publish(stages.RESULTS, result, message_id=f"QRES.1#{attempts}")
            await redeliver(vhost.url, RESULTS)
            assert await consume_once(world.broker, RESULTS, on_delivery) == [True]
    assert [query.get("attempt") for query in tracker_server.queries] == ["2", "3"]
    assert await depths(vhost.url, RESULTS, "retry.5m", DSN) == (0, 1, 1), "only attempt 3 retried (and warned)"
    events = await stream_events(vhost.url, lambda got: len(got) >= 2)
    assert [(event_kind(e), e.attempt) for e in events] == [("duplicate", 2), ("deferred", 3)]
    assert events[1].deferred.retry_queue == "retry.5m"


async def test_a_redelivered_job_already_routed_is_not_routed_again(
    vhost: Vhost, tracker_server: StandInTracker
) -> None:
    tracker_server.recorded.add(("routed", "", "QRT.1", "1"))

    class Router:
        async def route(self, domain: str) -> message_pb2.Route:
            return message_pb2.Route(
                kind=message_pb2.TRANSPORT_KIND_SMTP,
                hosts=[message_pb2.RouteHost(hostname="mx.example.org", address="192.0.2.1", port=25)],
                source="transport",
                provider="other",
            )

    async with Services(await connected(vhost.url), tracker_server.url, "dns-resolver") as world:
        handler = RouteHandler(Router(), world.publisher, events=world.events, checks=JobChecks(world.tracker))
        on_delivery = subscribe_deliveries(stages.ROUTE, handler.handle).on_delivery
        for queue_id in ("QRT", "QRT2"):
            await world.publisher.publish(stages.ROUTE, the_job(queue_id), message_id=f"{queue_id}.1")
            await redeliver(vhost.url, ROUTE)
            assert await consume_once(world.broker, ROUTE, on_delivery) == [True]
    assert await depths(vhost.url, ROUTE, DELIVER) == (0, 1)
    events = await stream_events(vhost.url, lambda got: len(got) >= 2)
    assert [(event_kind(e), e.job_id) for e in events] == [("duplicate", "QRT.1"), ("routed", "QRT2.1")]
    assert list(events[1].routed.hosts) == ["mx.example.org[192.0.2.1]:25"]


async def test_the_resolver_honours_delete_and_hold_decisions_issued_before_it_started(
    vhost: Vhost, tmp_path: Path
) -> None:
    broker = await connected(vhost.url)
    publisher = Publisher(broker, 5)
    now = datetime.now(UTC)
    decisions = [
        ("DDEL", events_pb2.DECISION_VERB_DELETE, "deleted.test", False),
        ("DDSN", events_pb2.DECISION_VERB_DELETE, "bounced.test", True),
        ("DHOLD", events_pb2.DECISION_VERB_HOLD, "held.test", False),
    ]
    for decision_id, verb, domain, dsn in decisions:
        await issue(publisher, decision_id, verb, events_pb2.Selector(domain=domain), dsn=dsn, at=now)
    domains = ("deleted.test", "bounced.test", "held.test", "routed.test")
    stack = Stack(tmp_path, {"KUBEMTA_AMQP_URL": vhost.url})
    try:
        await stack.start(
            ("dns-resolver",),
            extra_env={
                "dns-resolver": {
                    "KUBEMTA_DNS_NAMESERVERS": "127.0.0.1",
                    "KUBEMTA_MTA_STS": "false",
                    "KUBEMTA_TRANSPORTS": ";".join(f"{domain}=smtp:[192.0.2.9]:25" for domain in domains),
                }
            },
        )
        for number, domain in enumerate(domains):
            await publisher.publish(stages.ROUTE, the_job(f"Q{number}", domain), message_id=f"Q{number}.1")
        routed = message_pb2.DeliveryJob.FromString((await first_message(vhost.url, DELIVER, within=WAIT)).body)
        assert routed.domain == "routed.test"
        held_message = await first_message(vhost.url, HELD, within=WAIT)
        held = message_pb2.DeliveryJob.FromString(held_message.body)
        assert held.domain == "held.test" and held_message.type == "kubemta.v1.DeliveryJob"
        assert {key: held_message.headers[key] for key in (RELEASE_TO, QUEUE_ID, JOB_ID, DECISION_ID)} == {
            RELEASE_TO: ROUTE,
            QUEUE_ID: "Q2",
            JOB_ID: "Q2.1",
            DECISION_ID: "DHOLD",
        }
        failed = message_pb2.DeliveryResult.FromString((await first_message(vhost.url, RESULTS, within=WAIT)).body)
        assert failed.job.domain == "bounced.test"
        assert [(r.status, r.diagnostic) for r in failed.recipients] == [("5.3.0", "deleted by the administrator")]
        events = await stream_events(vhost.url, lambda got: len(kinds_of(got, "dns-resolver")) >= 4)
    finally:
        await stack.stop()
        await close(broker)
    by_job = {event.job_id: event for event in events if event.service == "dns-resolver"}
    assert event_kind(by_job["Q0.1"]) == "deleted" and not by_job["Q0.1"].deleted.dsn_requested
    assert by_job["Q0.1"].deleted.decision_id == "DDEL" and by_job["Q0.1"].deleted.stage == "dns-resolver"
    assert event_kind(by_job["Q1.1"]) == "deleted" and by_job["Q1.1"].deleted.dsn_requested
    assert event_kind(by_job["Q2.1"]) == "held" and by_job["Q2.1"].held.decision_id == "DHOLD"
    assert event_kind(by_job["Q3.1"]) == "routed" and by_job["Q3.1"].message_id == "<Q3@example.com>"
    assert await depths(vhost.url, ROUTE, DELIVER, HELD, RESULTS) == (0, 0, 0, 0)


async def test_the_queue_manager_honours_delete_and_hold_decisions_on_results(vhost: Vhost, tmp_path: Path) -> None:
    broker = await connected(vhost.url)
    publisher = Publisher(broker, 5)
    now = datetime.now(UTC)
    for decision_id, verb, queue_id, dsn in (
        ("DDEL", events_pb2.DECISION_VERB_DELETE, "QDEL", False),
        ("DDSN", events_pb2.DECISION_VERB_DELETE, "QDSN", True),
        ("DHOLD", events_pb2.DECISION_VERB_HOLD, "QHOLD", False),
    ):
        await issue(publisher, decision_id, verb, events_pb2.Selector(queue_id=queue_id), dsn=dsn, at=now)
    stack = Stack(tmp_path, {"KUBEMTA_AMQP_URL": vhost.url})
    try:
        await stack.start(
            ("queue-manager",),
            extra_env={
                "queue-manager": {
                    "KUBEMTA_HOSTNAME": "mx.kubemta.test",
                    "KUBEMTA_RETRY_SCHEDULE": "5m",
                    "KUBEMTA_DSN_BATCH_WINDOW": "0.2s",
                }
            },
        )
        for queue_id in ("QDEL", "QDSN", "QHOLD", "QOK"):
            result = message_pb2.DeliveryResult(
                job=the_job(queue_id),
                recipients=[
                    message_pb2.RecipientResult(
                        recipient="bob@example.org", outcome=message_pb2.OUTCOME_TEMPORARY, status="4.2.0"
                    )
                ],
                reporter="delivery-worker",
            )
            await publisher.publish(stages.RESULTS, result, message_id=f"{queue_id}.1#1")
        retried = message_pb2.DeliveryJob.FromString((await first_message(vhost.url, "retry.5m", within=WAIT)).body)
        assert retried.queue_id == "QOK"
        held_message = await first_message(vhost.url, HELD, within=WAIT)
        assert message_pb2.DeliveryJob.FromString(held_message.body).queue_id == "QHOLD"
        assert (held_message.headers[RELEASE_TO], held_message.headers[DECISION_ID]) == (ROUTE, "DHOLD")

        def complete(got: list[events_pb2.LifecycleEvent]) -> bool:
            return "dsn_sent" in kinds_of(got, "queue-manager") and len(kinds_of(got, "queue-manager")) >= 8

        events = await stream_events(vhost.url, complete)
    finally:
        await stack.stop()
        await close(broker)
    by_message: dict[str, list[str]] = {}
    for event in events:
        if event.service == "queue-manager":
            by_message.setdefault(event.queue_id, []).append(event_kind(event))
    assert by_message["QDEL"] == ["deleted"]
    assert by_message["QDSN"][:2] == ["deleted", "bounced"] and "dsn_sent" in by_message["QDSN"]
    assert by_message["QHOLD"] == ["held", "deferred"]
    assert by_message["QOK"] == ["deferred"]
    deleted = next(e for e in events if e.queue_id == "QDEL").deleted
    assert (deleted.stage, deleted.decision_id, deleted.dsn_requested) == ("queue-manager", "DDEL", False)
    assert await depths(vhost.url, "retry.5m", HELD) == (0, 0)
