"""The duplicate look-up of a client's retry answers without a barrier: a `received` event a service recorded
through its EventLog is found within a bounded wait, no barrier sync involved, and the ingest's batches are
flushed well within the freshness the API documents (ingest.INDEXED_WITHIN)."""

import asyncio
import secrets
from typing import Any

import pytest

from kubemta_common.events.stream_reader import FLUSH_SECONDS
from kubemta_tracker.ingest import INDEXED_WITHIN

WAIT = 10.0
"""Bound of the wait for each event to be found (normally about INDEXED_WITHIN; no timing is asserted)."""


def test_the_ingest_flushes_well_within_the_documented_freshness() -> None:
    assert FLUSH_SECONDS <= INDEXED_WITHIN / 2


@pytest.mark.broker
async def test_a_recorded_received_event_is_found_without_a_barrier(
    replicas: Any, producer: Any, kit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = await replicas("a")

    async def no_barrier() -> bool:
        raise AssertionError("the received look-up must not wait for a barrier")

    monkeypatch.setattr(replica.context.barriers, "sync", no_barrier)
    for number in range(5):
        queue_id = f"Q{number}"
        dedup_key = secrets.token_hex(32)
        event = kit.received(queue_id, dedup_key=dedup_key, message_id=f"<m{number}@example.com>")
        event.ClearField("time")  # the EventLog stamps it now
        event.received.arrival_time.GetCurrentTime()  # within the look-up's window
        assert await producer.core.events.record(event)
        path = f"/v1/duplicates/received/{dedup_key}"
        async with asyncio.timeout(WAIT):
            while True:
                response = await replica.get(path, within=60)
                if response.status_code != 404:
                    break
                await asyncio.sleep(0.01)
        assert (response.status_code, response.json()) == (200, {"queue_id": queue_id})
        assert (await replica.get(f"/v1/duplicates/received/{secrets.token_hex(32)}", within=60)).status_code == 404
