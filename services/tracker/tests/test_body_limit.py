"""Hostile request bodies over a real socket: the tracker API (uvicorn on a loopback port, as in production)
refuses a body over KUBEMTA_TRACKER_MAX_BODY with 413, declared or not, and one that does not arrive within
KUBEMTA_TRACKER_BODY_TIMEOUT with 408, before routing and authentication, the same answer for every caller.
The middleware itself is also checked without a socket against arbitrary chunkings (hypothesis)."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.config_types import ListenAddress
from kubemta_common.http_server import HttpServer
from kubemta_tracker.api import create_app
from kubemta_tracker.body_limit import BodyLimit
from kubemta_tracker.context import TrackerContext
from kubemta_tracker.index import Index
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.sync import BarrierSync
from tests.harness.fake_events import RecordingEvents
from tests.harness.ports import free_port

READ_TOKEN = "read-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
LIMIT = 64 * 1024
BODY_TIMEOUT = 0.5
WAIT = 10.0
"""Bound of every wait for an answer (the answers themselves come at once, or after BODY_TIMEOUT)."""

CALLERS = {
    "nobody": {},
    "wrong token": {"Authorization": "Bearer wrong-token-0123456789abcdef"},
    "reader": {"Authorization": f"Bearer {READ_TOKEN}"},
    "operator": {"Authorization": f"Bearer {ADMIN_TOKEN}"},
}
PATHS = ["/v1/queue/hold", "/v1/queue/flush", "/v1/messages", "/v1/no-such-route"]


@pytest.fixture
async def api(index: Index) -> AsyncIterator[ListenAddress]:
    """The tracker API served by uvicorn on a free loopback port, without a broker (admin commands: 503)."""
    sink = RecordingEvents(service="tracker")

    async def no_depths() -> dict[str, int]:
        return {}

    values: dict[str, Any] = {
        "tracker_read_tokens": f"reader:{READ_TOKEN}",
        "tracker_admin_tokens": f"operator:{ADMIN_TOKEN}",
        "metrics_listen": "",
        "tracker_listen": "",
        "log_format": "text",
        "tracker_body_timeout": BODY_TIMEOUT,
    }
    context = TrackerContext(
        settings=TrackerSettings(**values),
        index=index,
        barriers=BarrierSync(sink, 0.2),
        broker=cast(Broker, None),
        publisher=cast(Publisher, None),
        events=sink,
        queue_depths=no_depths,
    )
    assert context.settings.tracker_max_body == LIMIT  # the default
    listen = ListenAddress("127.0.0.1", free_port())
    server = HttpServer(create_app(context), listen)
    await server.start()
    try:
        yield listen
    finally:
        await server.stop()


def client(listen: ListenAddress) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://{listen}", timeout=WAIT)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the server sent until it closed the connection. A close with bytes of ours still unread makes the
    server's kernel reset the connection: that ends the answer too (what arrived before the reset is kept)."""
    answer = b""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                block = await reader.read(65536)
            except ConnectionResetError:
                return answer
            if not block:
                return answer
            answer += block


async def exchange(listen: ListenAddress, request: bytes) -> tuple[bytes, bytes]:
    """Send `request` as raw bytes (no more), then read until the server closes: (status line and headers,
    body). The connection is left open from our side, so a server waiting for more would time the test out."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(listen.host, listen.port), WAIT)
    try:
        writer.write(request)
        await writer.drain()
        answer = await read_to_end(reader)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def refused(head: bytes, status: int) -> None:
    lines = head.decode("latin-1").lower().split("\r\n")
    assert lines[0].startswith(f"http/1.1 {status} ")
    assert "connection: close" in lines


def padded(payload: dict[str, Any], size: int) -> bytes:
    """`payload` as JSON followed by whitespace up to `size` bytes (still valid JSON)."""
    text = json.dumps(payload).encode()
    return text + b" " * (size - len(text))


async def chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """`body` as an async iterator: httpx sends it chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(api: ListenAddress) -> None:
    for expect in (b"", b"Expect: 100-continue\r\n"):
        head, body = await exchange(
            api,
            b"POST /v1/queue/hold HTTP/1.1\r\nHost: tracker\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n" + expect + b"\r\n",
        )
        refused(head, 413)  # not "100 Continue": the body is never invited
        assert json.loads(body) == {"detail": f"the request body is larger than {LIMIT} bytes"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_body_is_the_same_413_for_every_caller_and_path(api: ListenAddress, chunked: bool) -> None:
    """Before routing and authentication: nothing in the answer depends on the token or on the route."""
    oversized = padded({"domain": "example.com"}, LIMIT + 1)
    answers = set()
    async with client(api) as http:
        for path in PATHS:
            for headers in CALLERS.values():
                content = chunks(oversized) if chunked else oversized
                response = await http.post(path, content=content, headers=headers)
                answers.add((response.status_code, response.text, response.headers.get("www-authenticate")))
        assert answers == {(413, json.dumps({"detail": f"the request body is larger than {LIMIT} bytes"}), None)}
        # the server is not wedged by the refused requests
        assert (await http.get("/v1/messages", headers=CALLERS["reader"])).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_limit_reaches_the_app(api: ListenAddress, chunked: bool) -> None:
    at_limit = padded({"domain": "example.com"}, LIMIT)
    async with client(api) as http:
        statuses = {}
        for name, headers in CALLERS.items():
            content = chunks(at_limit) if chunked else at_limit
            statuses[name] = (await http.post("/v1/queue/hold", content=content, headers=headers)).status_code
    # authentication and the command ran as usual: 401, 403, and the operator's command got to the broker check
    assert statuses == {"nobody": 401, "wrong token": 401, "reader": 403, "operator": 503}


async def test_a_body_that_stops_arriving_is_408_and_closed(api: ListenAddress) -> None:
    head, body = await exchange(
        api,
        b"POST /v1/queue/hold HTTP/1.1\r\nHost: tracker\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"domain": ',
    )
    refused(head, 408)
    assert json.loads(body) == {"detail": f"the request body did not arrive within {BODY_TIMEOUT:g} s"}


async def test_a_chunked_body_that_trickles_is_408_and_closed(api: ListenAddress) -> None:
    """A client that keeps sending, slowly, is cut off at the timeout too (not only one that stops)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(api.host, api.port), WAIT)
    try:
        writer.write(b"POST /v1/queue/hold HTTP/1.1\r\nHost: tracker\r\nTransfer-Encoding: chunked\r\n\r\n")

        async def trickle() -> None:
            while True:
                writer.write(b"1\r\n \r\n")
                await writer.drain()
                await asyncio.sleep(BODY_TIMEOUT / 10)

        trickling = asyncio.create_task(trickle())
        try:
            answer = await read_to_end(reader)
        finally:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
    finally:
        writer.close()
    head, _, _ = answer.partition(b"\r\n\r\n")
    refused(head, 408)


async def test_requests_without_a_body_are_untouched(api: ListenAddress) -> None:
    async with client(api) as http:
        assert (await http.get("/v1/queue/held", headers=CALLERS["reader"])).json() == {"held": []}
        assert (await http.get("/v1/queue/held")).status_code == 401
        assert (await http.post("/v1/queue/flush", headers=CALLERS["operator"])).status_code == 503


# -- the middleware alone ----------------------------------------------------------------------------------------


async def run_middleware(parts: list[bytes], limit: int) -> tuple[int, bytes | None]:
    """Feed `parts` as one request's body messages to BodyLimit; (status, the body the app saw or None)."""
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        seen.append(message["body"])
        assert not message["more_body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1} for index, part in enumerate(parts)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    await BodyLimit(cast(Callable[..., Awaitable[None]], app), max_body=limit, timeout=WAIT)(scope, receive, send)
    return sent[0]["status"], (seen[0] if seen else None)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.binary(max_size=64), max_size=12), limit=st.integers(min_value=0, max_value=400))
async def test_any_chunking_is_reassembled_or_refused(parts: list[bytes], limit: int) -> None:
    status, seen = await run_middleware(parts, limit)
    whole = b"".join(parts)
    if len(whole) <= limit:
        assert (status, seen) == (200, whole)
    else:
        assert (status, seen) == (413, None)
