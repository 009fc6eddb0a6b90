"""The webhooks service against a real RabbitMQ and real HTTP receivers: fate events an app's mail gets through
the `events` stream reach its endpoint signed; failures are retried through the tier queues; one replica reads
the stream at a time, and when it dies another takes over from the checkpoint without losing anything."""

import asyncio
from typing import Any

import pytest

from kubemta_webhooks import metrics
from kubemta_webhooks.signing import verify

pytestmark = pytest.mark.broker

APP = "system:serviceaccount:shop:billing"
OTHER_APP = "apikey:newsletter"


def _count(endpoint: str, result: str) -> float:
    return float(metrics.DELIVERIES.labels(endpoint=endpoint, result=result)._value.get())


async def test_an_apps_delivered_event_reaches_its_endpoint_signed_and_no_other(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    billing, newsletter = await receivers(), await receivers()
    path = endpoints_file(("billing", billing, [APP]), ("newsletter", newsletter, [OTHER_APP]))
    replica = await (await replicas(path)).lead()
    delivered = kit("delivered", tags=("invoice",))
    ids = await producer.record_all([kit("delivered", submitter="apikey:someone-else"), delivered])
    (got,) = await billing.wait_for(1)
    assert got.verified
    assert verify(key_of(replica, "billing"), got.headers, got.body) == ids[1]
    document = got.json
    assert document["type"] == "message.delivered"
    assert document["id"] == ids[1] == got.headers["webhook-id"]
    assert document["submitter"] == APP
    assert document["tags"] == ["invoice"]
    assert document["queue_id"] == delivered.queue_id
    assert document["recipients"][0]["recipient"] == "bob@example.org"
    assert got.headers["content-type"] == "application/json"
    await asyncio.sleep(1.0)  # the other app's event was read before this one: nothing more may come
    assert newsletter.received == []
    assert len(billing.received) == 1


def key_of(replica: Any, endpoint: str) -> bytes:
    """The endpoint's HMAC key as the service loaded it."""
    key = replica.service.endpoints.endpoints[endpoint].key
    assert isinstance(key, bytes)
    return key


async def test_a_failing_endpoint_gets_it_after_retries_and_410_stops_retrying(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    flaky, gone = await receivers(), await receivers()
    path = endpoints_file(("flaky", flaky, [APP]), ("gone", gone, [OTHER_APP]))
    await (await replicas(path)).lead()
    retried, gone_before = _count("flaky", "retried"), _count("gone", "gone")
    flaky.plan(500, "hang")  # a 500, then no answer within the 1 s timeout, then the default 204
    gone.plan(410)
    ids = await producer.record_all([kit("bounced"), kit("bounced", submitter=OTHER_APP)])
    (got,) = await flaky.wait_for(1, within=30)
    assert [item.headers["webhook-id"] for item in flaky.received] == [ids[0]] * 3
    assert all(item.verified for item in flaky.received)
    assert len({item.headers["webhook-signature"] for item in flaky.received}) >= 2  # re-signed per attempt
    assert got.json["type"] == "message.bounced"
    assert _count("flaky", "retried") - retried == 2
    assert [item.status for item in gone.received] == [410]
    await asyncio.sleep(1.5)  # longer than both retry tiers: a retry would have come
    assert len(gone.received) == 1
    assert _count("gone", "gone") - gone_before == 1
    assert len(flaky.received) == 3


async def test_a_second_replica_sends_no_duplicates_while_the_leader_lives(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    receiver = await receivers()
    path = endpoints_file(("billing", receiver, [APP]))
    first = await (await replicas(path)).lead()
    second = await replicas(path)
    ids = await producer.record_all([kit("delivered") for _ in range(20)])
    await receiver.wait_for(20)
    await asyncio.sleep(1.0)
    assert sorted(item.headers["webhook-id"] for item in receiver.received) == sorted(ids)
    assert first.service.leader.leading.is_set()
    assert not second.service.leader.leading.is_set()


async def test_when_the_leader_dies_the_other_takes_over_from_the_checkpoint(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    receiver = await receivers()
    path = endpoints_file(("billing", receiver, [APP]))
    first = await (await replicas(path)).lead()
    second = await replicas(path)
    before = await producer.record_all([kit("delivered") for _ in range(10)])
    await receiver.wait_for(10)

    during = await producer.record_all([kit("delivered") for _ in range(10)])
    connection = first.service.leader.connection
    assert connection is not None
    await connection.close()  # the leader's connection dies (its lock with it) while it may be mid-batch
    await first.stop()
    after = await producer.record_all([kit("deferred") for _ in range(10)])
    await second.lead()
    expected = set(before + during + after)
    await receiver.wait_for_ids(expected)
    assert receiver.delivered_ids == expected
    assert all(item.verified for item in receiver.received)
    assert second.service.leader.last_offset is not None


async def test_a_restarted_service_resumes_after_its_checkpoint(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    receiver = await receivers()
    path = endpoints_file(("billing", receiver, [APP]))
    first = await (await replicas(path)).lead()
    old = await producer.record_all([kit("delivered") for _ in range(5)])
    await receiver.wait_for(5)
    await asyncio.sleep(0.5)  # the checkpoint after the batch is written
    await first.stop()
    while_down = await producer.record_all([kit("expired") for _ in range(5)])
    await (await replicas(path)).lead()
    await receiver.wait_for_ids(while_down)
    await asyncio.sleep(0.5)
    resent = [item for item in receiver.received if item.headers["webhook-id"] in old]
    assert len(resent) == 5, "the checkpoint was written: the old events are not sent again"


async def test_a_webhook_still_failing_after_the_max_age_is_dropped(
    replicas: Any, receivers: Any, endpoints_file: Any, producer: Any, kit: Any
) -> None:
    broken = await receivers()
    broken.plan(*([500] * 50))
    path = endpoints_file(("broken", broken, [APP]))
    await (await replicas(path, webhook_max_age="1s")).lead()
    expired = _count("broken", "expired")
    await producer.record_all([kit("bounced")])
    for _ in range(100):  # attempts at about 0 s, 0.2 s, 0.7 s, 1.2 s: the last one is past the max age
        if _count("broken", "expired") > expired:
            break
        await asyncio.sleep(0.1)
    assert _count("broken", "expired") - expired == 1
    attempts = len(broken.received)
    assert 2 <= attempts <= 6
    await asyncio.sleep(1.0)
    assert len(broken.received) == attempts, "an expired webhook is not tried again"
