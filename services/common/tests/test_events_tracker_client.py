"""TrackerClient against a real HTTP server on the loopback: the API's answers, and hostile ones (not JSON,
wrong types, huge or endless bodies, errors, slow answers), which must all come back as None ("unknown")."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_common.events import tracker_client
from kubemta_common.events.tracker_client import MAX_BODY, TrackerClient
from kubemta_common.metrics import DUPLICATE_CHECKS
from kubemta_common.settings import ServiceSettings
from tests.harness.ports import free_port

KEY = "ab" * 32
TOKEN = "reader-token-123"


@dataclass
class Request:
    method: str
    path: str
    """The raw (still percent-encoded) path."""
    query: dict[str, list[str]]
    headers: dict[str, str]


Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def answer(status: int, body: bytes | str | object, *, content_type: str = "application/json") -> Writer:
    """A complete HTTP/1.1 answer; a str or bytes body goes as it is, anything else as JSON."""
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(raw)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + raw
        )
        await writer.drain()

    return write


@dataclass
class FakeTracker:
    """A loopback HTTP server answering each request with `reply(request)`."""

    reply: Callable[[Request], Writer] = lambda request: answer(500, {"detail": "no reply set"})
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.port = free_port()
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            parts = urlsplit(target)
            request = Request(method, parts.path, parse_qs(parts.query), headers)
            self.requests.append(request)
            await self.reply(request)(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()


@pytest.fixture
async def tracker() -> AsyncIterator[FakeTracker]:
    server = FakeTracker()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(tracker: FakeTracker) -> AsyncIterator[TrackerClient]:
    made = TrackerClient(tracker.url + "/", TOKEN, 1.0)
    try:
        yield made
    finally:
        await made.close()


def checks(check: str, result: str) -> float:
    return float(DUPLICATE_CHECKS.labels(check=check, result=result)._value.get())


# --- the API's own answers -------------------------------------------------------------------------------------


async def test_a_received_duplicate_gives_the_first_queue_id(tracker: FakeTracker, client: TrackerClient) -> None:
    tracker.reply = lambda request: answer(200, {"queue_id": "FirstQueueId0001"})
    before = checks("received", "found")
    assert await client.first_queue_id(KEY, 3600) == "FirstQueueId0001"
    request = tracker.requests[-1]
    assert request.method == "GET"
    assert request.path == f"/v1/duplicates/received/{KEY}"
    assert request.query == {"within": ["3600"]}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert checks("received", "found") == before + 1


async def test_404_means_no_earlier_copy(tracker: FakeTracker, client: TrackerClient) -> None:
    tracker.reply = lambda request: answer(404, {"detail": "no message with this dedup key within the window"})
    before = checks("received", "absent")
    assert await client.first_queue_id(KEY, 90.5) == ""
    assert tracker.requests[-1].query == {"within": ["90.5"]}
    assert checks("received", "absent") == before + 1


async def test_delivered_recipients_are_recipient_outcomes(tracker: FakeTracker, client: TrackerClient) -> None:
    recipients = [
        {
            "recipient": "bob@example.org",
            "outcome": "OUTCOME_DELIVERED",
            "smtp_code": 250,
            "status": "2.0.0",
            "diagnostic": "smtp; 250 2.0.0 Ok",
            "remote_mta": "dns; mx.example.org",
            "extra": "ignored",
        },
        {"recipient": "carol@example.org", "outcome": 1},
    ]
    tracker.reply = lambda request: answer(200, {"recipients": recipients})
    outcomes = await client.delivered_recipients("Q1.example.org")
    assert outcomes is not None
    assert [outcome.recipient for outcome in outcomes] == ["bob@example.org", "carol@example.org"]
    assert outcomes[0].outcome == message_pb2.OUTCOME_DELIVERED
    assert outcomes[0].smtp_code == 250
    assert outcomes[0].remote_mta == "dns; mx.example.org"
    assert outcomes[1].outcome == message_pb2.OUTCOME_DELIVERED
    assert tracker.requests[-1].path == "/v1/duplicates/jobs/Q1.example.org/delivered"


async def test_no_delivered_recipients_is_an_empty_list(tracker: FakeTracker, client: TrackerClient) -> None:
    tracker.reply = lambda request: answer(200, {"recipients": []})
    before = checks("delivered", "absent")
    assert await client.delivered_recipients("Q1.example.org") == []
    assert checks("delivered", "absent") == before + 1


@pytest.mark.parametrize("job_id", ["../../v1/queue/flush", "..", ".", "a/b?c=d#e", "Q1.bücher.de", "%2e%2e"])
async def test_a_job_id_is_one_path_segment_whatever_it_holds(
    tracker: FakeTracker, client: TrackerClient, job_id: str
) -> None:
    tracker.reply = lambda request: answer(200, {"recipients": []})
    assert await client.delivered_recipients(job_id) == []
    path = tracker.requests[-1].path
    prefix, rest = "/v1/duplicates/jobs/", "/delivered"
    assert path.startswith(prefix) and path.endswith(rest)
    segment = path[len(prefix) : -len(rest)]
    assert "/" not in segment and segment not in (".", "..")
    assert unquote(segment) == job_id


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize(
    ("kind", "ids", "query"),
    [
        ("queued", {"queue_id": "Q1"}, {"kind": ["queued"], "queue_id": ["Q1"]}),
        ("routed", {"job_id": "Q1.d", "attempt": 0}, {"kind": ["routed"], "job_id": ["Q1.d"], "attempt": ["0"]}),
        ("fate", {"job_id": "Q1.d", "attempt": 3}, {"kind": ["fate"], "job_id": ["Q1.d"], "attempt": ["3"]}),
    ],
)
async def test_recorded_asks_for_the_kind_and_ids(
    tracker: FakeTracker,
    client: TrackerClient,
    kind: str,
    ids: dict[str, object],
    query: dict[str, list[str]],
    value: bool,
) -> None:
    tracker.reply = lambda request: answer(200, {"recorded": value})
    result = "found" if value else "absent"
    before = checks(kind, result)
    assert await client.recorded(kind, **ids) is value  # type: ignore[arg-type]
    assert tracker.requests[-1].path == "/v1/duplicates/recorded"
    assert tracker.requests[-1].query == query
    assert checks(kind, result) == before + 1


# --- what the client does not even ask ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "xyz", "ab" * 100, "../x", KEY + "\r\n"])
async def test_a_dedup_key_that_is_not_hex_is_not_asked(tracker: FakeTracker, client: TrackerClient, key: str) -> None:
    assert await client.first_queue_id(key, 3600) is None
    assert tracker.requests == []


async def test_recorded_without_the_id_its_kind_needs_or_of_an_unknown_kind_is_unknown(
    tracker: FakeTracker, client: TrackerClient
) -> None:
    assert await client.recorded("queued", job_id="Q1.d") is None
    assert await client.recorded("routed", queue_id="Q1") is None
    assert await client.recorded("delivered; DROP TABLE", queue_id="Q1") is None
    assert await client.delivered_recipients("") is None
    assert tracker.requests == []


# --- hostile and failing answers: all unknown ---------------------------------------------------------------------


def endless(writer_chunk: bytes, *, declared: bool) -> Writer:
    """An answer whose body never ends (chunked, or with a Content-Length far over the cap)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        if declared:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        for _ in range(100000):
            chunk = writer_chunk if declared else f"{len(writer_chunk):x}\r\n".encode() + writer_chunk + b"\r\n"
            writer.write(chunk)
            await writer.drain()

    return write


def slow(after: float) -> Writer:
    async def write(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(after)
        await answer(200, {"queue_id": "TooLate"})(writer)

    return write


def dripping() -> Writer:
    """Headers at once, then one body byte every 0.2 s: each read is quick, the whole answer is not."""

    async def write(writer: asyncio.StreamWriter) -> None:
        body = json.dumps({"queue_id": "Dripped"}).encode()
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:
            await asyncio.sleep(0.2)
            writer.write(bytes([byte]))
            await writer.drain()

    return write


def hang_up() -> Writer:
    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
        await writer.drain()

    return write


HOSTILE_RECEIVED: list[tuple[str, Callable[[], Writer]]] = [
    ("500", lambda: answer(500, {"detail": "boom"})),
    ("503", lambda: answer(503, {"detail": "the index did not catch up"})),
    ("401", lambda: answer(401, {"detail": "unauthorised"})),
    ("redirect", lambda: answer(302, "")),
    ("not json", lambda: answer(200, "<html>proxy error</html>", content_type="text/html")),
    ("invalid utf-8", lambda: answer(200, b'{"queue_id": "\xff\xfe"}')),
    ("a list", lambda: answer(200, ["Q1"])),
    ("null", lambda: answer(200, "null")),
    ("queue id a number", lambda: answer(200, {"queue_id": 12345})),
    ("queue id empty", lambda: answer(200, {"queue_id": ""})),
    ("queue id huge", lambda: answer(200, {"queue_id": "Q" * 5000})),
    ("deep nesting", lambda: answer(200, "[" * 100000 + "]" * 100000)),
    ("huge declared", lambda: endless(b"x" * 65536, declared=True)),
    ("huge chunked", lambda: endless(b" " * 65536, declared=False)),
    ("slow", lambda: slow(3.0)),
    ("dripping", dripping),
    ("hang up", hang_up),
]


@pytest.mark.parametrize(("name", "make"), HOSTILE_RECEIVED, ids=[name for name, _ in HOSTILE_RECEIVED])
async def test_a_hostile_or_failed_received_answer_is_unknown(
    tracker: FakeTracker, client: TrackerClient, name: str, make: Callable[[], Writer]
) -> None:
    tracker.reply = lambda request: make()
    before = checks("received", "unknown")
    async with asyncio.timeout(10):  # the client's own bound is 1 s
        assert await client.first_queue_id(KEY, 3600) is None
    assert checks("received", "unknown") == before + 1


HOSTILE_DELIVERED: list[tuple[str, object]] = [
    ("no recipients", {"detail": "x"}),
    ("recipients not a list", {"recipients": "bob@example.org"}),
    ("a recipient not an object", {"recipients": ["bob@example.org"]}),
    ("a bad outcome", {"recipients": [{"recipient": "bob@example.org", "outcome": "OUTCOME_EXPLODED"}]}),
    ("a code not a number", {"recipients": [{"recipient": "bob@example.org", "smtp_code": "two-fifty"}]}),
    ("a negative code", {"recipients": [{"recipient": "bob@example.org", "smtp_code": -1}]}),
    ("a recipient a number", {"recipients": [{"recipient": 7}]}),
]


@pytest.mark.parametrize(("name", "body"), HOSTILE_DELIVERED, ids=[name for name, _ in HOSTILE_DELIVERED])
async def test_a_hostile_delivered_answer_is_unknown(
    tracker: FakeTracker, client: TrackerClient, name: str, body: object
) -> None:
    tracker.reply = lambda request: answer(200, body)
    before = checks("delivered", "unknown")
    assert await client.delivered_recipients("Q1.example.org") is None
    assert checks("delivered", "unknown") == before + 1


@pytest.mark.parametrize("status", [404, 503, 500])
async def test_a_delivered_error_is_unknown(tracker: FakeTracker, client: TrackerClient, status: int) -> None:
    tracker.reply = lambda request: answer(status, {"detail": "x"})
    assert await client.delivered_recipients("Q1.example.org") is None


@pytest.mark.parametrize("body", [{"recorded": "true"}, {"recorded": 1}, {"recorded": None}, {}, [True], "true"])
async def test_a_recorded_answer_that_is_not_a_boolean_is_unknown(
    tracker: FakeTracker, client: TrackerClient, body: object
) -> None:
    tracker.reply = lambda request: answer(200, body)
    before = checks("routed", "unknown")
    assert await client.recorded("routed", job_id="Q1.d", attempt=1) is None
    assert checks("routed", "unknown") == before + 1


async def test_a_tracker_that_is_down_is_unknown_and_warned_about_once_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = TrackerClient(f"http://127.0.0.1:{free_port()}", TOKEN, 1.0)  # nothing listens there
    try:
        with caplog.at_level(logging.DEBUG, logger=tracker_client.__name__):
            for _ in range(5):
                assert await client.recorded("queued", queue_id="Q1") is None
    finally:
        await client.close()
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectError" in warnings[0].getMessage()
    assert TOKEN not in caplog.text


def test_a_token_that_cannot_be_a_header_is_refused() -> None:
    for token in ("a b", "line\r\nX-Injected: 1", "tökén"):
        with pytest.raises(ValueError, match="visible ASCII"):
            TrackerClient("http://127.0.0.1:1", token, 1.0)


def test_from_settings_is_none_without_a_url() -> None:
    assert TrackerClient.from_settings(ServiceSettings(tracker_url="")) is None


async def test_from_settings_uses_the_url_token_and_timeout(tracker: FakeTracker) -> None:
    tracker.reply = lambda request: answer(200, {"recorded": True})
    settings = ServiceSettings(tracker_url=tracker.url, tracker_token=SecretStr("secret-token"), tracker_timeout=0.5)
    client = TrackerClient.from_settings(settings)
    assert client is not None
    try:
        assert await client.recorded("queued", queue_id="Q1") is True
        assert tracker.requests[-1].headers["authorization"] == "Bearer secret-token"
    finally:
        await client.close()


def test_every_check_and_result_is_exported_from_the_start() -> None:
    for check in ("received", "delivered", "queued", "routed", "fate"):
        for result in ("found", "absent", "unknown"):
            assert checks(check, result) >= 0


def test_the_body_cap_is_above_a_large_job() -> None:
    one = json.dumps({"recipient": "r" * 64 + "@example.org", "outcome": "OUTCOME_DELIVERED", "diagnostic": "d" * 200})
    assert len(one) * 1000 < MAX_BODY
