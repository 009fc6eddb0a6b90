"""The suppression list on a real `suppressions` stream: an operator's add or remove is seen by a check on the same
replica as soon as it is answered (read-your-writes), two replicas on one stream show the same list
(cluster-wide), the queue-manager's appender reaches both, and a replica that starts with an empty index rebuilds
the same list from the stream."""

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_common.service import ServiceCore
from kubemta_common.settings import ServiceSettings
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker

ADMIN = {"Authorization": "Bearer admin-token-0123456789abcdef"}
READ = {"Authorization": "Bearer read-token-0123456789abcdef"}


async def _listed(replica: Any) -> list[tuple[str, str, str]]:
    assert replica.client is not None
    answer = await replica.client.get("/v1/suppressions", headers=READ)
    assert answer.status_code == 200, answer.text
    return [(entry["address"], entry["source"], entry["expires"]) for entry in answer.json()["suppressions"]]


async def _checked(replica: Any, *addresses: str) -> list[str]:
    answer = await replica.client.post("/v1/suppressions/check", json={"addresses": list(addresses)}, headers=READ)
    assert answer.status_code == 200, answer.text
    return sorted(entry["address"] for entry in answer.json()["suppressed"])


async def _until(check: Callable[[], Any], *, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


@pytest.fixture
async def bounces(vhost: Vhost) -> AsyncIterator[SuppressionLog]:
    """The queue-manager's appender on the vhost, as its __main__ builds it."""
    settings = ServiceSettings.model_validate({"amqp_url": vhost.url, "metrics_listen": "", "log_format": "text"})
    core = ServiceCore("queue-manager", settings)
    await core.start()
    log = SuppressionLog(core.publisher, actor="queue-manager", ttl=settings.suppression_ttl)
    log.start()
    try:
        async with asyncio.timeout(30):
            await core.broker.wait_ready()
        yield log
    finally:
        await log.close(5.0)
        await core.close()


async def test_an_operators_change_is_seen_by_the_next_check_on_the_same_replica(replicas: Any) -> None:
    a = await replicas("a", sync_timeout=10.0)
    added = await a.client.post(
        "/v1/suppressions",
        json={"address": "Bob@Example.org", "reason": "asked to stop", "ttl": 86400},
        headers=ADMIN,
    )
    assert added.status_code == 200, added.text
    entry = added.json()
    assert (entry["address"], entry["source"], entry["actor"], entry["reason"]) == (
        "bob@example.org",
        "admin",
        "operator",
        "asked to stop",
    )
    assert await _checked(a, "BOB@example.org", "carol@example.org") == ["bob@example.org"]
    assert (await a.client.get("/v1/suppressions/bob@example.org", headers=READ)).status_code == 200

    removed = await a.client.delete("/v1/suppressions/bob@example.org", headers=ADMIN)
    assert removed.status_code == 200 and removed.json() == {"address": "bob@example.org", "removed": True}
    assert await _checked(a, "bob@example.org") == []
    assert (await a.client.get("/v1/suppressions/bob@example.org", headers=READ)).status_code == 404
    assert (await a.client.delete("/v1/suppressions/bob@example.org", headers=ADMIN)).status_code == 404


async def test_two_replicas_share_the_list_and_a_new_one_rebuilds_it(replicas: Any, bounces: SuppressionLog) -> None:
    a = await replicas("a", sync_timeout=10.0)
    b = await replicas("b", sync_timeout=10.0)
    bounces.suppress("dave@example.net", reason="invalid_recipient", queue_id="4FJ2K8Q1ZB", diagnostic="550 5.1.1 no")
    for address in ("x@example.org", "y@example.org"):
        assert (await a.client.post("/v1/suppressions", json={"address": address}, headers=ADMIN)).status_code == 200

    async def b_has_x() -> bool:
        return await _checked(b, "x@example.org") == ["x@example.org"]

    await _until(b_has_x)  # cluster-wide: added on a, seen on b, removed there
    assert (await b.client.delete("/v1/suppressions/x@example.org", headers=ADMIN)).status_code == 200

    async def same() -> bool:
        listed = await _listed(a)
        return len(listed) == 2 and listed == await _listed(b)

    await _until(same)
    assert [(address, source) for address, source, _ in await _listed(a)] == [
        ("dave@example.net", "bounce"),
        ("y@example.org", "admin"),
    ]
    shown = (await b.client.get("/v1/suppressions/dave@example.net", headers=READ)).json()
    assert (shown["queue_id"], shown["reason"], shown["actor"]) == ("4FJ2K8Q1ZB", "invalid_recipient", "queue-manager")

    c = await replicas("c")  # an empty index: ready only once it replayed the stream
    assert await _listed(c) == await _listed(a)
