"""Idempotency-Key claims against real tracker replicas on a real broker, asked over real HTTP by the ingress'
`Idempotency` through `TrackerClient`: two replicas on one stream agree on one winner, however the requests
race; a released claim lets the next win; a stale claim is overtaken; a received message with dedup key
`idem:<key>` makes the key done (its queue id replayed, another request refused)."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kubemta_common.config_types import parse_listen
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.http_server import HttpServer
from kubemta_ingress.idempotency import (
    Conflict,
    Idempotency,
    IdempotencyKey,
    Proceed,
    Replay,
    key_hash,
    request_fingerprint,
)
from kubemta_tracker.api import create_app
from tests.harness.ports import free_port

pytestmark = pytest.mark.broker

READ_TOKEN = "read-token-0123456789abcdef"
WINDOW = 86400.0
FP = request_fingerprint("POST", "/v1/messages", "application/json", b'{"to": ["bob@example.org"]}')
OTHER_FP = request_fingerprint("POST", "/v1/messages", "application/json", b'{"to": ["eve@example.org"]}')


@dataclass(frozen=True)
class Caller:
    name: str


ALICE = Caller("apikey:alice")


@dataclass
class Served:
    """A replica's API on a loopback port and an ingress' `Idempotency` asking it."""

    replica: Any
    client: TrackerClient
    idempotency: Idempotency


@pytest.fixture
async def served(replicas: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """`await served("a", **settings)`: a started replica, its API served over HTTP, and an Idempotency on it."""
    servers: list[HttpServer] = []
    clients: list[TrackerClient] = []

    async def start(name: str, **settings: Any) -> Served:
        settings.setdefault("sync_timeout", 10.0)
        replica = await replicas(name, **settings)
        port = free_port()
        listen = parse_listen(f"127.0.0.1:{port}")
        assert listen is not None
        server = HttpServer(create_app(replica.context), listen)
        await server.start()
        servers.append(server)
        client = TrackerClient(f"http://127.0.0.1:{port}", READ_TOKEN, 15.0)
        clients.append(client)
        return Served(replica, client, Idempotency(client, WINDOW))

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await server.stop()


async def test_two_replicas_agree_on_one_winner_however_the_requests_race(served: Callable[..., Any]) -> None:
    a, b = await served("a"), await served("b")
    for round_ in range(4):
        key = IdempotencyKey(f"race-{round_}")
        begun = await asyncio.gather(
            *(side.idempotency.begin(ALICE, key, FP) for side in (a, b, a, b, a, b)),
        )
        winners = [outcome for outcome in begun if isinstance(outcome, Proceed)]
        assert len(winners) == 1, begun
        assert all(outcome == Conflict("in-progress") for outcome in begun if outcome is not winners[0]), begun
        # every replica, having indexed every claim, gives each claimant the answer it got
        hashed = key_hash(ALICE.name, key)
        for side in (a, b):
            index = side.replica.index
            answer = await index.read(index.reader.idempotency, hashed, winners[0].claimant, 0.0, 60.0)
            assert answer is not None and answer.state == "claimed"


async def test_raw_claims_racing_on_both_replicas_have_exactly_one_claimed(served: Callable[..., Any]) -> None:
    a, b = await served("a"), await served("b")
    hashed = key_hash(ALICE.name, "raw")
    answers = await asyncio.gather(
        *(
            (a if number % 2 else b).client.claim_idempotency(hashed, FP, f"claimant-{number}", WINDOW)
            for number in range(10)
        )
    )
    assert [answer.state for answer in answers].count("claimed") == 1
    assert {answer.state for answer in answers} == {"claimed", "in_progress"}

    async def views(number: int) -> list[Any]:
        return [
            await side.replica.index.read(
                side.replica.index.reader.idempotency, hashed, f"claimant-{number}", 0.0, 60.0
            )
            for side in (a, b)
        ]

    async def all_indexed() -> None:
        # each answer came once its claim was indexed on the replica asked; the other replica may be a batch behind
        for number in range(10):
            while True:
                if None not in await views(number):
                    break
                await asyncio.sleep(0.05)

    async with asyncio.timeout(20):
        await all_indexed()
    for number in range(10):
        seen = await views(number)
        assert seen[0] == seen[1] and seen[0].state == answers[number].state


async def test_a_released_claim_lets_the_next_request_win_on_the_other_replica(served: Callable[..., Any]) -> None:
    a, b = await served("a"), await served("b")
    key = IdempotencyKey("released")
    first = await a.idempotency.begin(ALICE, key, FP)
    assert isinstance(first, Proceed)
    assert await b.idempotency.begin(ALICE, key, FP) == Conflict("in-progress")
    await a.idempotency.abandon(first)
    second = await b.idempotency.begin(ALICE, key, OTHER_FP)
    assert isinstance(second, Proceed) and second.claimant != first.claimant
    assert await a.idempotency.begin(ALICE, key, OTHER_FP) == Conflict("in-progress")


async def test_a_stale_claim_is_overtaken(served: Callable[..., Any]) -> None:
    a, b = await served("a", idempotency_claim_ttl=1.0), await served("b", idempotency_claim_ttl=1.0)
    key = IdempotencyKey("stale")
    first = await a.idempotency.begin(ALICE, key, FP)
    assert isinstance(first, Proceed)
    assert await b.idempotency.begin(ALICE, key, FP) == Conflict("in-progress")
    started = time.monotonic()
    await asyncio.sleep(1.2)
    overtaking = await b.idempotency.begin(ALICE, key, FP)
    assert isinstance(overtaking, Proceed), (overtaking, time.monotonic() - started)


async def test_a_received_message_with_the_dedup_key_makes_the_key_done(
    served: Callable[..., Any], producer: Any, kit: Any
) -> None:
    a, b = await served("a"), await served("b")
    key = IdempotencyKey("done")
    first = await a.idempotency.begin(ALICE, key, FP)
    assert isinstance(first, Proceed)
    received = kit.received("QIDEM0000000001", dedup_key=first.dedup_key)
    received.received.arrival_time.GetCurrentTime()
    await producer.record_all([received])  # as the ingress records `received` before its 202
    assert await b.idempotency.begin(ALICE, key, FP) == Replay("QIDEM0000000001")
    assert await a.idempotency.begin(ALICE, key, FP) == Replay("QIDEM0000000001")
    assert await b.idempotency.begin(ALICE, key, OTHER_FP) == Conflict("other-request")
