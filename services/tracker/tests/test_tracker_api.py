"""The read API over an index (no broker): JSON shapes, input validation, hostile values, barrier sync."""

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2
from kubemta_tracker.index import Index
from kubemta_tracker.sync import BarrierSync
from tests.harness.fake_events import RecordingEvents

READ = {"Authorization": "Bearer read-token-0123456789abcdef"}


async def test_shapes_of_find_show_summary_and_held(
    index: Index, kit: Any, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    events = [
        *kit.delivered_message("Q1", message_id="<m1@example.com>"),
        kit.received("Q2", at=10),
        kit.queued("Q2", {"example.org": ["bob@example.org"]}, at=11),
        kit.job_event("held", "Q2", "example.org", at=12, reason="admin"),
    ]
    await index.index_events([(0, kit.batch(*events))])
    client = make_client()

    found = (await client.get("/v1/messages", params={"message_id": "<m1@example.com>"}, headers=READ)).json()
    assert found == {
        "messages": [
            {
                "queue_id": "Q1",
                "message_id": "<m1@example.com>",
                "sender": "alice@example.com",
                "recipients": ["bob@example.org"],
                "received_at": "2026-03-02T10:00:00.000Z",
                "size": 1234,
                "state": "done",
            }
        ]
    }
    shown = (await client.get("/v1/messages/Q1", headers=READ)).json()
    assert set(shown) == {
        "queue_id",
        "message_id",
        "sender",
        "recipients",
        "received_at",
        "size",
        "client_address",
        "client_helo",
        "authenticated_user",
        "trust",
        "listener",
        "headers",
        "state",
        "jobs",
        "timeline",
    }
    assert shown["client_address"] == "192.0.2.1" and shown["listener"] == "smtp"
    assert shown["jobs"][0]["state"] == "delivered"
    assert shown["timeline"][0] == {
        "time": "2026-03-02T10:00:00.000Z",
        "service": "test",
        "source": "test/1",
        "kind": "received",
        "job_id": "",
        "attempt": 0,
        "details": shown["timeline"][0]["details"],
    }
    assert shown["timeline"][0]["details"]["sender"] == "alice@example.com"
    assert "headers" not in shown["timeline"][0]["details"]
    assert (await client.get("/v1/messages/nope", headers=READ)).status_code == 404
    assert (await client.get("/v1/messages/nope", headers=READ)).json() == {"detail": "no such message in the index"}

    summary = (await client.get("/v1/queue/summary", headers=READ)).json()
    assert set(summary) == {"stages", "retry", "domains", "broker"}
    assert set(summary["stages"]) == {"inbound", "route", "deliver", "results", "held"}
    assert summary["stages"]["held"]["messages"] == 1
    assert set(summary["retry"]) == {"retry.5m", "retry.10m", "retry.20m", "retry.40m", "retry.1h"}
    assert summary["domains"][0]["domain"] == "example.org"
    assert summary["broker"] == {}

    held = (await client.get("/v1/queue/held", headers=READ)).json()
    assert held == {
        "held": [
            {
                "queue_id": "Q2",
                "job_id": "Q2.example.org",
                "domain": "example.org",
                "sender": "alice@example.com",
                "recipients": ["bob@example.org"],
                "reason": "admin",
                "held_at": "2026-03-02T10:00:12.000Z",
            }
        ]
    }


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages?limit=0",
        "/v1/messages?limit=1001",
        "/v1/messages?limit=ten",
        "/v1/messages?since=yesterday",
        "/v1/messages?until=2026-13-45T99:00:00Z",
        "/v1/messages?queue_id=" + "Q" * 129,
        "/v1/messages?message_id=" + "m" * 999,
        "/v1/messages?recipient=",
        "/v1/messages?state=delivered",
        "/v1/messages?state=retry.' OR 1",
        "/v1/messages?domain=" + "d" * 256,
        "/v1/messages/" + "Q" * 129,
        "/v1/duplicates/received/not-hex",
        "/v1/duplicates/received/abcd",
        "/v1/duplicates/received/" + "ab" * 32 + "?within=-1",
        "/v1/duplicates/received/" + "ab" * 32 + "?within=nan",
        "/v1/duplicates/recorded?kind=attempted&job_id=J",
        "/v1/duplicates/recorded?kind=queued",
        "/v1/duplicates/recorded?kind=fate",
        "/v1/duplicates/recorded?kind=fate&job_id=J&attempt=-1",
    ],
)
async def test_bad_query_values_get_422_with_a_text_detail(
    make_client: Callable[..., httpx.AsyncClient], path: str
) -> None:
    response = await make_client().get(path, headers=READ)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert "Q" * 129 not in detail


HOSTILE = [
    "' OR 1=1 --",
    '"; DROP TABLE messages; --',
    "%",
    "_",
    "*",
    "\x00",
    "<a@b>\r\nX-Injected: yes",
    "\u202e\u0000\ud7ff",
    "🙂@例え.テスト",
    "<>",
]


async def test_hostile_values_are_just_data(
    index: Index, kit: Any, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    await index.index_events([(0, kit.batch(*kit.delivered_message("Q1")))])
    client = make_client()
    for value in HOSTILE:
        for key in ("queue_id", "message_id", "sender", "recipient"):
            response = await client.get("/v1/messages", params={key: value}, headers=READ)
            assert response.status_code == 200, (key, value, response.text)
            assert response.json() == {"messages": []}
        response = await client.get(f"/v1/messages/{quote(value, safe='')}", headers=READ)
        assert response.status_code in (404, 422)
    # the message is still there
    assert len((await client.get("/v1/messages", headers=READ)).json()["messages"]) == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["queue_id", "message_id", "sender", "recipient"]), value=st.text(max_size=1100))
async def test_any_text_query_answers_200_or_422(
    make_client: Callable[..., httpx.AsyncClient], key: str, value: str
) -> None:
    response = await make_client().get("/v1/messages", params={key: value}, headers=READ)
    assert response.status_code in (200, 422), response.text


async def test_duplicate_checks_answer_after_a_barrier(
    index: Index, kit: Any, make_client: Callable[..., httpx.AsyncClient]
) -> None:
    key = "ab" * 32
    events = [
        kit.received("Q1", dedup_key=key),
        kit.queued("Q1", {"example.org": ["bob@example.org"]}, at=1),
        kit.job_event("attempted", "Q1", "example.org", at=3, recipients=[kit.outcome("bob@example.org")]),
    ]
    await index.index_events([(0, kit.batch(*events))])
    sink = RecordingEvents(service="tracker")
    client = make_client(sync_timeout=5.0, events=sink)
    emitted: list[events_pb2.LifecycleEvent] = []

    async def index_barriers() -> None:
        """Stands in for the ingest: what the tracker emitted reaches the index."""
        offset = 1
        while True:
            await asyncio.sleep(0.01)
            emitted.extend(event for event in sink.events if event.HasField("barrier"))
            if sink.events:
                pending, sink.events[:] = list(sink.events), []
                nonces = await index.index_events([(offset, kit.batch(*pending))])
                offset += 1
                barriers.seen(nonces)

    barriers: BarrierSync = client._transport.app.state.tracker.barriers  # type: ignore[attr-defined]
    feeder = asyncio.create_task(index_barriers())
    try:
        answers = await asyncio.gather(
            *(
                client.get("/v1/duplicates/recorded", params={"kind": "queued", "queue_id": "Q1"}, headers=READ)
                for _ in range(10)
            ),
            client.get("/v1/duplicates/jobs/Q1.example.org/delivered", headers=READ),
            client.get("/v1/duplicates/recorded", params={"kind": "fate", "job_id": "Q1.example.org"}, headers=READ),
        )
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    assert [answer.json() for answer in answers[:10]] == [{"recorded": True}] * 10
    assert answers[10].json()["recipients"][0]["recipient"] == "bob@example.org"
    assert answers[11].json() == {"recorded": False}
    assert 1 <= len(emitted) < len(answers)  # concurrent requests shared barriers (how many: the loop's timing)
    recent = kit.received("Q3", at=time.time() - kit.T0.timestamp() - 60, dedup_key=key)
    await index.index_events([(100, kit.batch(recent))])
    found = await client.get(f"/v1/duplicates/received/{key}", params={"within": 3600}, headers=READ)
    assert found.json() == {"queue_id": "Q3"}
    assert (await client.get(f"/v1/duplicates/received/{key}", params={"within": 0}, headers=READ)).status_code == 404


async def test_a_barrier_not_indexed_in_time_is_503(make_client: Callable[..., httpx.AsyncClient]) -> None:
    sink = RecordingEvents(service="tracker")
    client = make_client(sync_timeout=0.1, events=sink)
    for path in ("/v1/duplicates/jobs/J/delivered", "/v1/duplicates/recorded?kind=routed&job_id=J&attempt=1"):
        response = await client.get(path, headers=READ)
        assert response.status_code == 503
        assert response.json() == {"detail": "the index did not catch up with the events stream in time"}
    assert sink.kinds() == ["barrier", "barrier"]
    barrier = sink.events[0]
    assert isinstance(barrier, events_pb2.LifecycleEvent) and barrier.barrier.nonce
