"""The ingress' suppression check (kubemta_ingress.suppression_check) against a real tracker replica served over
HTTP on a real stream: a suppressed recipient gets its 550 Refusal (5.1.1 after a bounce, 5.7.1 for an operator's
entry, hostile text made safe), an unknown one none, a tracker that is down fails open with the metric, and
answers are cached for the configured time (a fake clock, no sleeping)."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubemta_common.config_types import parse_listen
from kubemta_common.events.suppression_log import BOUNCE, SuppressionLog, change
from kubemta_common.events.tracker_client import TrackerClient
from kubemta_common.http_server import HttpServer
from kubemta_ingress.suppression_check import SuppressionCheck
from kubemta_tracker.api import create_app
from tests.harness.ports import free_port

pytestmark = pytest.mark.broker

READ_TOKEN = "read-token-0123456789abcdef"
ADMIN = {"Authorization": "Bearer admin-token-0123456789abcdef"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("kubemta_suppression_checks_total", {"result": result}) or 0.0


@pytest.fixture
async def served(replicas: Callable[..., Any]) -> AsyncIterator[tuple[Any, TrackerClient]]:
    """A replica, its API on a loopback port, and the ingress' TrackerClient of it."""
    replica = await replicas("a", sync_timeout=10.0)
    port = free_port()
    listen = parse_listen(f"127.0.0.1:{port}")
    assert listen is not None
    server = HttpServer(create_app(replica.context), listen)
    await server.start()
    client = TrackerClient(f"http://127.0.0.1:{port}", READ_TOKEN, 10.0)
    try:
        yield replica, client
    finally:
        await client.close()
        await server.stop()


async def _bounce(replica: Any, address: str) -> None:
    """A hard bounce's entry, appended as the queue-manager's SuppressionLog does, and waited for."""
    log: SuppressionLog = replica.context.suppression_log
    record = change(address, suppressed=True, source=BOUNCE, actor="queue-manager", reason="invalid_recipient", ttl=60)
    replica.context.applied.expect(record.change_id)
    assert await log.append(record)
    assert await replica.context.applied.wait(record.change_id, 10.0)


async def test_suppressed_recipients_get_their_refusal_and_others_none(served: tuple[Any, TrackerClient]) -> None:
    replica, client = served
    await _bounce(replica, "bob@example.org")
    added = await replica.client.post(
        "/v1/suppressions",
        json={"address": "carol@example.org", "reason": "complaint <b>\u00e9</b> ticket 42"},
        headers=ADMIN,
    )
    assert added.status_code == 200
    check = SuppressionCheck(client, timeout=5.0, cache_ttl=0)
    before = _count("suppressed"), _count("not_suppressed")

    refusals = await check.refusal(["Bob@Example.org", "carol@example.org", "dave@example.org", "not an address"])

    assert sorted(refusals) == ["Bob@Example.org", "carol@example.org"]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    bob = refusals["Bob@Example.org"]
    assert bob.reply == (
        f"550 5.1.1 <Bob@Example.org>: Recipient address is suppressed after a hard bounce on {today} "
        "(invalid_recipient)"
    )
    assert (bob.code, bob.status) == (550, "5.1.1")
    carol = refusals["carol@example.org"]
    assert carol.reply == "550 5.7.1 <carol@example.org>: Recipient address is suppressed by the operator " + (
        "(complaint ?b???/b? ticket 42)"
    )
    assert carol.status == "5.7.1"
    assert (_count("suppressed") - before[0], _count("not_suppressed") - before[1]) == (2, 1)


async def test_a_tracker_that_is_down_fails_open_with_the_metric() -> None:
    client = TrackerClient(f"http://127.0.0.1:{free_port()}", READ_TOKEN, 10.0)  # nobody listens there
    try:
        check = SuppressionCheck(client, timeout=2.0, cache_ttl=60)
        before = _count("unavailable")
        assert await check.refusal(["bob@example.org", "carol@example.org"]) == {}
        assert _count("unavailable") - before == 2
        assert await check.refusal(["bob@example.org"]) == {}  # an unknown answer is not cached: asked again
        assert _count("unavailable") - before == 3
    finally:
        await client.close()


async def test_a_slow_tracker_fails_open_within_the_timeout() -> None:
    """A tracker that accepts the connection and never answers: the check gives up after its own timeout."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TrackerClient(f"http://127.0.0.1:{port}", READ_TOKEN, 10.0)
    try:
        check = SuppressionCheck(client, timeout=0.2, cache_ttl=60)
        before = _count("unavailable")
        async with asyncio.timeout(5):  # bounded by the check's 0.2 s, not the client's 10 s
            assert await check.refusal(["bob@example.org"]) == {}
        assert _count("unavailable") - before == 1
    finally:
        await client.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_answers_are_cached_for_the_ttl(served: tuple[Any, TrackerClient]) -> None:
    replica, client = served
    await _bounce(replica, "bob@example.org")
    clock = Clock()
    check = SuppressionCheck(client, timeout=5.0, cache_ttl=10.0, clock=clock)
    assert list(await check.refusal(["bob@example.org", "eve@example.org"])) == ["bob@example.org"]

    assert (await replica.client.delete("/v1/suppressions/bob@example.org", headers=ADMIN)).status_code == 200
    added = await replica.client.post("/v1/suppressions", json={"address": "eve@example.org"}, headers=ADMIN)
    assert added.status_code == 200
    hits = REGISTRY.get_sample_value("kubemta_suppression_cache_hits_total") or 0.0
    clock.now += 9.0
    assert list(await check.refusal(["bob@example.org", "eve@example.org"])) == ["bob@example.org"]  # both cached
    assert (REGISTRY.get_sample_value("kubemta_suppression_cache_hits_total") or 0.0) - hits == 2
    clock.now += 2.0
    assert list(await check.refusal(["bob@example.org", "eve@example.org"])) == ["eve@example.org"]  # asked again
