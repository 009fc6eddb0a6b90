"""TrackerClient's Idempotency-Key claims against a real HTTP server on the loopback: the requests it sends, the
answers it understands, and every other answer (errors, hostile bodies, slowness, no server), which must raise
TrackerUnavailable, never answer."""

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from kubemta_common.events.tracker_client import IdempotencyAnswer, TrackerClient, TrackerUnavailable
from tests.harness.ports import free_port

KEY = "ab" * 32
FP = "cd" * 32
TOKEN = "reader-token-123"

Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


def answer(status: int, body: bytes | object) -> Writer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + raw
        )
        await writer.drain()

    return write


def slow(after: float) -> Writer:
    async def write(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(after)
        await answer(200, {"state": "claimed"})(writer)

    return write


def huge() -> Writer:
    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n")
        for _ in range(1000):
            writer.write(b" " * 65536)
            await writer.drain()

    return write


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class LoopbackTracker:
    """Answers each request with `reply`; keeps what it was sent (with the JSON body decoded)."""

    reply: Callable[[], Writer] = lambda: answer(200, {"state": "claimed"})
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.port = free_port()
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append(Seen(method, path, headers, json.loads(body) if body else None))
            await self.reply()(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()


@pytest.fixture
async def tracker() -> AsyncIterator[LoopbackTracker]:
    server = LoopbackTracker()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(tracker: LoopbackTracker) -> AsyncIterator[TrackerClient]:
    made = TrackerClient(f"http://127.0.0.1:{tracker.port}/", TOKEN, 1.0)
    try:
        yield made
    finally:
        await made.close()


async def test_a_claim_posts_json_with_the_token(tracker: LoopbackTracker, client: TrackerClient) -> None:
    assert await client.claim_idempotency(KEY, FP, "claimant-1", 86400.0) == IdempotencyAnswer("claimed")
    [seen] = tracker.seen
    assert (seen.method, seen.path) == ("POST", "/v1/idempotency/claims")
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.body == {"key": KEY, "fingerprint": FP, "claimant": "claimant-1", "window": 86400.0}


async def test_the_answers_the_api_promises(tracker: LoopbackTracker, client: TrackerClient) -> None:
    tracker.reply = lambda: answer(200, {"state": "in_progress", "fingerprint": FP})
    assert await client.claim_idempotency(KEY, FP, "c", 60) == IdempotencyAnswer("in_progress", fingerprint=FP)
    tracker.reply = lambda: answer(200, {"state": "done", "queue_id": "Q1", "fingerprint": FP, "newer": 1})
    assert await client.claim_idempotency(KEY, FP, "c", 60) == IdempotencyAnswer("done", "Q1", FP)
    tracker.reply = lambda: answer(200, {"state": "done", "queue_id": "Q1", "fingerprint": ""})
    assert await client.claim_idempotency(KEY, FP, "c", 60) == IdempotencyAnswer("done", "Q1", "")


async def test_a_release_posts_and_expects_released(tracker: LoopbackTracker, client: TrackerClient) -> None:
    tracker.reply = lambda: answer(200, {"state": "released"})
    await client.release_idempotency(KEY, "claimant-1")
    assert tracker.seen[0].path == "/v1/idempotency/releases"
    assert tracker.seen[0].body == {"key": KEY, "claimant": "claimant-1"}
    tracker.reply = lambda: answer(200, {"state": "claimed"})
    with pytest.raises(TrackerUnavailable):
        await client.release_idempotency(KEY, "claimant-1")


HOSTILE: list[tuple[str, Callable[[], Writer]]] = [
    ("503", lambda: answer(503, {"detail": "the index did not catch up with the events stream in time"})),
    ("422", lambda: answer(422, {"detail": "body.key: bad"})),
    ("401", lambda: answer(401, {"detail": "a bearer token is required"})),
    ("redirect", lambda: answer(302, b"")),
    ("not json", lambda: answer(200, b"<html>proxy</html>")),
    ("a list", lambda: answer(200, ["claimed"])),
    ("unknown state", lambda: answer(200, {"state": "maybe"})),
    ("no state", lambda: answer(200, {})),
    ("state a number", lambda: answer(200, {"state": 1})),
    ("done without queue id", lambda: answer(200, {"state": "done", "fingerprint": FP})),
    ("done queue id not a string", lambda: answer(200, {"state": "done", "queue_id": 5})),
    ("done queue id huge", lambda: answer(200, {"state": "done", "queue_id": "Q" * 5000})),
    ("fingerprint not hex", lambda: answer(200, {"state": "in_progress", "fingerprint": "x" * 64})),
    ("fingerprint a list", lambda: answer(200, {"state": "in_progress", "fingerprint": [FP]})),
    ("deep nesting", lambda: answer(200, b"[" * 100000 + b"]" * 100000)),
    ("huge", huge),
    ("slow", lambda: slow(3.0)),
]


@pytest.mark.parametrize(("name", "make"), HOSTILE, ids=[name for name, _ in HOSTILE])
async def test_any_other_answer_raises_tracker_unavailable(
    tracker: LoopbackTracker, client: TrackerClient, name: str, make: Callable[[], Writer]
) -> None:
    tracker.reply = make
    async with asyncio.timeout(5):
        with pytest.raises(TrackerUnavailable):
            await client.claim_idempotency(KEY, FP, "c", 60)


async def test_no_tracker_listening_raises_tracker_unavailable() -> None:
    client = TrackerClient(f"http://127.0.0.1:{free_port()}", TOKEN, 1.0)
    try:
        with pytest.raises(TrackerUnavailable, match="ConnectError"):
            await client.claim_idempotency(KEY, FP, "c", 60)
        with pytest.raises(TrackerUnavailable):
            await client.release_idempotency(KEY, "c")
    finally:
        await client.close()
