"""The tracker against the real broker: events a service records through its EventLog are found by every key,
a new replica rebuilds its index from the stream, a restarted one resumes after its stored offset, barrier sync
sees everything confirmed before the request, and decisions join a message's timeline."""

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest

from kubemta.v1 import events_pb2
from kubemta_common.amqp.streams import DECISIONS
from kubemta_common.amqp.topology import EXCHANGE

pytestmark = pytest.mark.broker


def _events_rows(replica: Any) -> int:
    with sqlite3.connect(replica.settings.index_path) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


async def _until(check: Callable[[], Any], *, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _find_all(replica: Any, **params: Any) -> list[str]:
    response = await replica.get("/v1/messages", **params)
    assert response.status_code == 200, response.text
    return [row["queue_id"] for row in response.json()["messages"]]


async def test_recorded_events_are_found_by_every_key_and_a_new_replica_rebuilds(
    replicas: Any, producer: Any, kit: Any
) -> None:
    first = await replicas("a")
    events = [
        *kit.delivered_message("Q1", message_id="<m1@example.com>", recipients=("bob@example.org",)),
        *kit.delivered_message("Q2", at=60, sender="carol@example.net", recipients=("dave@example.org",)),
    ]
    await producer.record_all(events)

    async def indexed() -> bool:
        return len(await _find_all(first)) == 2

    await _until(indexed)
    expected = {
        "queue_id": ("Q1", ["Q1"]),
        "message_id": ("<m1@example.com>", ["Q1"]),
        "sender": ("carol@example.net", ["Q2"]),
        "recipient": ("dave@example.org", ["Q2"]),
        "since": ((kit.T0.replace(second=30)).isoformat(), ["Q2"]),
        "until": ((kit.T0.replace(second=30)).isoformat(), ["Q1"]),
    }
    for key, (value, queue_ids) in expected.items():
        assert await _find_all(first, **{key: value}) == queue_ids, key
    shown = (await first.get("/v1/messages/Q1")).json()
    assert [entry["kind"] for entry in shown["timeline"]] == ["received", "queued", "routed", "attempted", "delivered"]
    assert [entry["time"] for entry in shown["timeline"]] == sorted(entry["time"] for entry in shown["timeline"])

    second = await replicas("b")  # an empty index file: replays the stream from its start
    for key, (value, queue_ids) in expected.items():
        assert await _find_all(second, **{key: value}) == queue_ids, key
    assert (await second.get("/v1/messages/Q1")).json() == shown
    assert (await second.get("/v1/queue/summary")).json()["stages"] == (await first.get("/v1/queue/summary")).json()[
        "stages"
    ]


async def test_a_restarted_replica_resumes_after_its_stored_offset(replicas: Any, producer: Any, kit: Any) -> None:
    replica = await replicas("a")
    await producer.record_all(kit.delivered_message("Q1"))

    async def five() -> bool:
        return _events_rows(replica) == 5

    await _until(five)
    stored = await replica.index.offset("events")
    await replica.stop()

    await producer.record_all(kit.delivered_message("Q2", at=60, recipients=("erin@example.org",)))
    again = await replicas("a")  # the same file
    assert again.ingest is not None and again.ingest.events_reader is not None

    async def ten() -> bool:
        return _events_rows(again) == 10

    await _until(ten)
    assert await again.index.offset("events") > stored
    assert sorted(await _find_all(again)) == ["Q1", "Q2"]
    # nothing was indexed twice: every event row is unique and Q1's job made one attempt
    assert (await again.get("/v1/messages/Q1")).json()["jobs"][0]["attempts"] == 1


async def test_barrier_sync_sees_everything_confirmed_before_the_request(
    replicas: Any, producer: Any, kit: Any
) -> None:
    replica = await replicas("a")
    for round_ in range(3):
        queue_id = f"QB{round_}"
        job = f"{queue_id}.example.org"
        events = [
            kit.received(queue_id),
            kit.queued(queue_id, {"example.org": ["bob@example.org"]}, at=1),
            kit.job_event("routed", queue_id, "example.org", at=2, attempt=round_),
            kit.job_event(
                "attempted", queue_id, "example.org", at=3, attempt=round_, recipients=[kit.outcome("bob@example.org")]
            ),
        ]
        await producer.record_all(events)  # confirmed: the next requests must see them, no waiting
        answers = await asyncio.gather(
            replica.get("/v1/duplicates/recorded", kind="queued", queue_id=queue_id),
            replica.get("/v1/duplicates/recorded", kind="routed", job_id=job, attempt=round_),
            replica.get("/v1/duplicates/recorded", kind="fate", job_id=job, attempt=round_),
            replica.get(f"/v1/duplicates/jobs/{job}/delivered"),
        )
        assert [answer.status_code for answer in answers] == [200] * 4, [answer.text for answer in answers]
        assert answers[0].json() == {"recorded": True}
        assert answers[1].json() == {"recorded": True}
        assert answers[2].json() == {"recorded": False}
        assert [row["recipient"] for row in answers[3].json()["recipients"]] == ["bob@example.org"]


async def test_summary_states_from_the_stream(replicas: Any, producer: Any, kit: Any) -> None:
    replica = await replicas("a")
    deferred = kit.job_event("deferred", "Q2", "slow.example", at=13, retry_queue="retry.5m")
    await producer.record_all(
        [
            kit.received("Q1"),
            kit.received("Q2", at=10, recipients=("x@slow.example",)),
            kit.queued("Q2", {"slow.example": ["x@slow.example"]}, at=11),
            kit.job_event("routed", "Q2", "slow.example", at=12),
            deferred,
        ]
    )

    async def indexed() -> bool:
        return len(await _find_all(replica)) == 2

    await _until(indexed)
    summary = (await replica.get("/v1/queue/summary")).json()
    assert summary["stages"]["inbound"]["messages"] == 1
    assert summary["retry"]["retry.5m"]["jobs"] == 1
    assert summary["domains"] == [
        {"domain": "slow.example", "jobs": 1, "deferred": 1, "oldest_seconds": summary["domains"][0]["oldest_seconds"]}
    ]
    assert summary["broker"]["inbound"] == 0 and "held" in summary["broker"] and "retry.5m" in summary["broker"]
    states = {row["queue_id"]: row["state"] for row in (await replica.get("/v1/messages")).json()["messages"]}
    assert states == {"Q1": "inbound", "Q2": "retry.5m"}


async def test_decisions_naming_a_message_show_in_its_timeline(
    replicas: Any, producer: Any, kit: Any, vhost: Any
) -> None:
    replica = await replicas("a")
    await producer.record_all([kit.received("QD")])
    decision = events_pb2.AdminDecision(
        decision_id="dec-1",
        actor="operator",
        verb=events_pb2.DECISION_VERB_DELETE,
        selector=events_pb2.Selector(queue_id="QD"),
        dsn=True,
    )
    decision.time.GetCurrentTime()
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        await exchange.publish(aio_pika.Message(decision.SerializeToString()), DECISIONS, mandatory=True)

    async def in_timeline() -> bool:
        shown = (await replica.get("/v1/messages/QD")).json()
        return [entry["kind"] for entry in shown.get("timeline", [])] == ["received", "decision"]

    await _until(in_timeline)
    shown = (await replica.get("/v1/messages/QD")).json()
    assert shown["timeline"][1]["details"]["verb"] == "DECISION_VERB_DELETE"
    assert shown["timeline"][1]["details"]["dsn"] is True
