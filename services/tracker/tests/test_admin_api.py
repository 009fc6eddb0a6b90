"""The admin routes of the tracker API (POST /v1/queue/flush|hold|release|delete): admin tokens only, bodies
validated (hostile selectors -> 422, never echoed, never a 500), 503 without a broker, and against a real
RabbitMQ the commands do what admin_ops.py says."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import aio_pika
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.held import JOB_TYPE
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import StreamRetention
from kubemta_common.amqp.topology import HELD, RESULTS, ROUTE, retry_queue_name
from kubemta_tracker.api import create_app
from kubemta_tracker.context import TrackerContext
from kubemta_tracker.index import Index
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.sync import BarrierSync
from tests.harness.fake_events import RecordingEvents
from tests.harness.rabbitmq import Vhost

READ_TOKEN = "reader-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DELAYS = [300.0]
RETRY = retry_queue_name(300.0)
ROUTES = ["flush", "hold", "release", "delete"]


def make_settings(url: str = "amqp://guest:guest@127.0.0.1:1/none") -> TrackerSettings:
    values: dict[str, Any] = {
        "amqp_url": url,
        "tracker_read_tokens": f"reader:{READ_TOKEN}",
        "tracker_admin_tokens": f"operator:{ADMIN_TOKEN}",
        "metrics_listen": "",
        "tracker_listen": "",
        "log_format": "text",
        "retry_schedule": DELAYS,
    }
    return TrackerSettings(**values)


def connect(url: str) -> Broker:
    return Broker(
        url,
        name="kubemta-tracker-admin-api-test",
        retry_delays=DELAYS,
        reconnect_interval=0.5,
        retention=StreamRetention(events_max_age=3600, events_max_bytes=64 * 1024 * 1024, decisions_max_age=3600),
    )


def client_for(
    broker: Broker, events: RecordingEvents, url: str = "amqp://guest:guest@127.0.0.1:1/none"
) -> httpx.AsyncClient:
    """An API client over a context whose admin routes use `broker` (the read side's index is not needed here)."""
    context = TrackerContext(
        settings=make_settings(url),
        index=cast(Index, None),
        barriers=cast(BarrierSync, None),
        broker=broker,
        publisher=Publisher(broker, timeout=10.0),
        events=events,
        queue_depths=cast(Any, None),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(context)), base_url="http://tracker")


@pytest.fixture
async def offline() -> AsyncIterator[httpx.AsyncClient]:
    """A client whose broker never connects (admin commands: 503 once the body is valid)."""
    async with client_for(connect("amqp://guest:guest@127.0.0.1:1/none"), RecordingEvents(service="tracker")) as client:
        yield client


# --- without a broker: auth, validation, 503 ---------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
async def test_admin_routes_need_an_admin_token(offline: httpx.AsyncClient, route: str) -> None:
    body = {"queue_id": "Q1"} if route != "flush" else {}
    nobody = await offline.post(f"/v1/queue/{route}", json=body)
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"].startswith("Bearer")
    wrong = await offline.post(f"/v1/queue/{route}", json=body, headers={"Authorization": "Bearer " + "x" * 30})
    assert wrong.status_code == 401
    reader = await offline.post(f"/v1/queue/{route}", json=body, headers=READ)
    assert reader.status_code == 403
    hostile = await offline.post(f"/v1/queue/{route}", json={"queue_id": "\x00" * 10000}, headers=READ)
    assert hostile.status_code == 403  # who you are is settled before what you sent


@pytest.mark.parametrize("route", ROUTES)
async def test_a_valid_command_without_a_broker_is_503(offline: httpx.AsyncClient, route: str) -> None:
    body = {"queue_id": "Q1"} if route != "flush" else {"domain": "example.com"}
    answer = await offline.post(f"/v1/queue/{route}", json=body, headers=ADMIN)
    assert answer.status_code == 503
    assert "broker" in answer.json()["detail"]


async def test_flush_takes_no_body_an_empty_one_or_all(offline: httpx.AsyncClient) -> None:
    for body in (None, {}, {"all": True}):
        answer = await offline.post("/v1/queue/flush", json=body, headers=ADMIN)
        assert answer.status_code == 503  # valid: it reached the broker (there is none)


TEN_KB = "a" * 10240
HOSTILE_BODIES: list[tuple[str, Any]] = [
    ("hold", {}),
    ("hold", {"queue_id": ""}),
    ("hold", {"queue_id": "Q1", "sender": "a@b.example"}),
    ("hold", {"all": True}),
    ("hold", {"queue_id": "Q1\r\nX-Injected: yes"}),
    ("hold", {"queue_id": "Q1\x00"}),
    ("hold", {"queue_id": TEN_KB}),
    ("hold", {"queue_id": 5}),
    ("hold", {"queue_id": ["Q1"]}),
    ("hold", {"queue_id": "Q1", "extra": 1}),
    ("hold", {"sender": "alice@example.com\r\nRCPT TO:<x@y>"}),
    ("hold", {"sender": "no-at-sign"}),
    ("hold", {"sender": "@example.com"}),
    ("hold", {"sender": "alice@"}),
    ("hold", {"sender": "a b@example.com"}),
    ("hold", {"sender": "<alice@example.com>"}),
    ("hold", {"sender": "x" * 250 + "@example.com"}),
    ("hold", {"domain": "exa mple.com"}),
    ("hold", {"domain": "example.com\n"}),
    ("hold", {"domain": "user@example.com"}),
    ("hold", {"domain": "\u0085example.com"}),
    ("hold", {"domain": "a." * 200}),
    ("release", {}),
    ("release", {"all": True, "domain": "example.com"}),
    ("release", {"all": "yes"}),
    ("release", {"all": 1}),
    ("delete", {"all": True}),
    ("delete", {"queue_id": "Q1", "dsn": "true"}),
    ("delete", {"queue_id": "Q1", "dsn": None}),
    ("flush", {"domain": "a.example", "all": True}),
    ("flush", {"domain": "a\x00.example"}),
    ("flush", {"domain": TEN_KB}),
    ("flush", {"queue_id": "Q1"}),
    ("flush", {"all": "no"}),
    ("hold", []),
    ("hold", "Q1"),
    ("hold", None),
]


@pytest.mark.parametrize(("route", "body"), HOSTILE_BODIES, ids=repr)
async def test_hostile_bodies_are_422_without_echo(offline: httpx.AsyncClient, route: str, body: Any) -> None:
    answer = await offline.post(f"/v1/queue/{route}", json=body, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail
    assert TEN_KB not in detail and "\x00" not in detail and "X-Injected" not in detail


@pytest.mark.parametrize(
    ("raw", "statuses"),
    [
        (b'{"queue_id": "\\ud800"}', {422}),  # a lone surrogate: valid JSON, not valid Unicode
        (b'{"sender": "\\udfff@example.com"}', {422}),
        (b"not json", {422}),
        (b'{"queue_id": "Q1"', {422}),
        (b"\xff\xfe\x00", {400}),  # not even text: FastAPI cannot parse the body
        (b'{"queue_id": "Q1", "queue_id": "Q2\\u0000"}', {422}),  # duplicate keys: the last one counts
        (b'{"queue_id": "Q1\\u0000", "queue_id": "Q2"}', {503}),  # valid, and then there is no broker
    ],
    ids=repr,
)
async def test_malformed_json_is_a_client_error(offline: httpx.AsyncClient, raw: bytes, statuses: set[int]) -> None:
    answer = await offline.post("/v1/queue/hold", content=raw, headers={**ADMIN, "Content-Type": "application/json"})
    assert answer.status_code in statuses, answer.text
    assert isinstance(answer.json()["detail"], str)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    field=st.sampled_from(["queue_id", "sender", "domain"]),
    value=st.text(max_size=400),
    route=st.sampled_from(["hold", "release", "delete"]),
)
async def test_any_selector_text_is_a_clean_answer(
    offline: httpx.AsyncClient, field: str, value: str, route: str
) -> None:
    answer = await offline.post(
        f"/v1/queue/{route}", content=json.dumps({field: value}), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert answer.status_code in (422, 503)  # refused, or valid and then no broker; never a 500
    assert isinstance(answer.json()["detail"], str)


# --- against the broker ------------------------------------------------------------------------------


class Online:
    def __init__(self, url: str, broker: Broker, client: httpx.AsyncClient, events: RecordingEvents) -> None:
        self.url = url
        self.broker = broker
        self.client = client
        self.events = events
        self.publisher = Publisher(broker, timeout=10.0)

    async def post(self, route: str, body: Any = None) -> httpx.Response:
        return await self.client.post(f"/v1/queue/{route}", json=body, headers=ADMIN)

    async def put(self, queue: str, job: message_pb2.DeliveryJob) -> None:
        await self.publisher.publish_raw(queue, job.SerializeToString(), message_id=job.job_id, message_type=JOB_TYPE)

    async def take_all(self, queue: str) -> list[bytes]:
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            q = await channel.get_queue(queue)
            bodies = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                bodies.append(message.body)
            return bodies
        finally:
            await connection.close()


@pytest.fixture
async def online(vhost: Vhost) -> AsyncIterator[Online]:
    broker = connect(vhost.url)
    task = asyncio.create_task(broker.run())
    events = RecordingEvents(service="tracker")
    try:
        async with asyncio.timeout(30):
            await broker.wait_ready()
        async with client_for(broker, events, vhost.url) as client:
            yield Online(vhost.url, broker, client, events)
    finally:
        task.cancel()
        await broker.close()


def job(queue_id: str, domain: str) -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(
        queue_id=queue_id, job_id=f"{queue_id}.1", sender="alice@example.com", domain=domain, recipients=[f"b@{domain}"]
    )


@pytest.mark.broker
async def test_flush_hold_release_delete_over_http(online: Online) -> None:
    await online.put(RETRY, job("Q1", "a.example"))
    await online.put(RETRY, job("Q2", "b.example"))
    await online.put(RETRY, job("Q3", "c.example"))

    flushed = await online.post("flush", {"domain": "A.example"})
    assert flushed.status_code == 200 and flushed.json() == {"flushed": 1}
    assert [message_pb2.DeliveryJob.FromString(b).queue_id for b in await online.take_all(ROUTE)] == ["Q1"]

    held = await online.post("hold", {"domain": "b.example"})
    assert held.status_code == 200
    assert held.json()["held"] == 1 and len(held.json()["decision_id"]) == 24
    await online.post("hold", {"queue_id": "Q3"})

    released = await online.post("release", {"queue_id": "Q2"})
    assert released.status_code == 200 and released.json()["released"] == 1
    assert released.json()["decision_id"] != held.json()["decision_id"]
    assert [message_pb2.DeliveryJob.FromString(b).queue_id for b in await online.take_all(ROUTE)] == ["Q2"]

    deleted = await online.post("delete", {"queue_id": "Q3", "dsn": True})
    assert deleted.status_code == 200 and deleted.json()["deleted"] == 1
    [result] = await online.take_all(RESULTS)
    assert message_pb2.DeliveryResult.FromString(result).recipients[0].status == "5.3.0"
    assert await online.take_all(HELD) == []

    actions = [e.admin_action for e in online.events.of_kind("admin_action")]
    assert [(a.verb, a.actor, a.affected) for a in actions] == [
        ("flush", "operator", 1),
        ("hold", "operator", 1),
        ("hold", "operator", 1),
        ("release", "operator", 1),
        ("delete", "operator", 1),
    ]


@pytest.mark.broker
async def test_release_all_and_flush_all_over_http(online: Online) -> None:
    await online.put(RETRY, job("Q1", "a.example"))
    await online.put(RETRY, job("Q2", "b.example"))
    assert (await online.post("hold", {"sender": "ALICE@example.com"})).json()["held"] == 2
    assert (await online.post("release", {"all": True})).json()["released"] == 2
    assert len(await online.take_all(ROUTE)) == 2
    await online.put(RETRY, job("Q3", "c.example"))
    assert (await online.post("flush")).json() == {"flushed": 1}


@pytest.mark.broker
async def test_a_command_whose_publish_fails_is_503(online: Online) -> None:
    connection = await aio_pika.connect(online.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete("decisions")
    finally:
        await connection.close()
    answer = await online.post("delete", {"domain": "a.example"})
    assert answer.status_code == 503
    assert "decisions" in answer.json()["detail"] or "unroutable" in answer.json()["detail"]
