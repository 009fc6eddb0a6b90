"""The oldest open message's arrival (oldest_open.py) over an index fed with events: what counts as open, the
value of an empty queue, the gauge absent until the index caught up, and a query plan that reads indexes only."""

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from kubemta.v1 import events_pb2
from kubemta_tracker import schema
from kubemta_tracker.index import Index
from kubemta_tracker.metrics import OLDEST_OPEN_MESSAGE, OptionalGauge
from kubemta_tracker.oldest_open import OLDEST_INBOUND, OLDEST_OPEN_JOB, export_oldest_open, read_oldest_open

NAME = "kubemta_tracker_oldest_open_message_timestamp_seconds"


async def oldest(index: Index) -> float | None:
    return await asyncio.to_thread(read_oldest_open, index.path)


async def test_an_empty_or_finished_queue_has_no_oldest_message(index: Index, kit: Any) -> None:
    assert await oldest(index) is None
    bounced = kit.delivered_message("Q2", at=10)[:-1] + [kit.job_event("bounced", "Q2", "example.org", at=15)]
    expired = kit.delivered_message("Q3", at=20)[:2] + [kit.job_event("expired", "Q3", "example.org", at=25)]
    deleted = kit.delivered_message("Q4", at=30)[:2] + [kit.job_event("deleted", "Q4", "example.org", at=35)]
    deleted_inbound = [
        kit.received("Q5", at=40),
        kit.event("deleted", events_pb2.Deleted(), queue_id="Q5", at=41),  # deleted as a whole, never queued
    ]
    events = [*kit.delivered_message("Q1"), *bounced, *expired, *deleted, *deleted_inbound]
    await index.index_events([(0, kit.batch(*events))])
    assert await oldest(index) is None


async def test_the_oldest_of_inbound_deferred_and_held_messages(index: Index, kit: Any) -> None:
    t0 = kit.T0.timestamp()
    await index.index_events([(0, kit.batch(*kit.delivered_message("Q0", at=0)))])
    deferred = [
        kit.received("Q1", at=10, recipients=("x@slow.example", "y@example.org")),
        kit.queued("Q1", {"slow.example": ["x@slow.example"], "example.org": ["y@example.org"]}, at=11),
        kit.job_event("delivered", "Q1", "example.org", at=12),
        kit.job_event("deferred", "Q1", "slow.example", at=13, retry_queue="retry.5m"),
    ]
    await index.index_events([(1, kit.batch(kit.received("Q3", at=30)))])  # not queued yet: inbound
    assert await oldest(index) == t0 + 30
    await index.index_events([(2, kit.batch(*deferred))])  # one job delivered, the other deferred: open
    assert await oldest(index) == t0 + 10
    held = [
        kit.received("Q2", at=5),
        kit.queued("Q2", {"example.org": ["bob@example.org"]}, at=6),
        kit.job_event("held", "Q2", "example.org", at=7, reason="admin", release_to="route"),
    ]
    await index.index_events([(3, kit.batch(*held))])
    assert await oldest(index) == t0 + 5
    await index.index_events([(4, kit.batch(kit.job_event("deleted", "Q2", "example.org", at=50)))])
    assert await oldest(index) == t0 + 10
    await index.index_events([(5, kit.batch(kit.job_event("delivered", "Q1", "slow.example", at=60)))])
    assert await oldest(index) == t0 + 30
    await index.index_events([(6, kit.batch(*kit.delivered_message("Q3", at=30)[1:]))])
    assert await oldest(index) is None


async def test_a_message_held_before_it_was_queued_stays_open(index: Index, kit: Any) -> None:
    held = kit.event("held", events_pb2.Held(reason="poison"), queue_id="Q1", at=2)  # the whole message
    await index.index_events([(0, kit.batch(kit.received("Q1", at=1), held))])
    assert await oldest(index) == kit.T0.timestamp() + 1


def plan(db: Any, query: str) -> list[str]:
    return [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + query)]


async def test_the_queries_search_indexes_and_scan_no_table(index: Index) -> None:
    with contextlib.closing(schema.connect_reader(index.path)) as db:
        inbound, jobs = plan(db, OLDEST_INBOUND), plan(db, OLDEST_OPEN_JOB)
    assert inbound[0].startswith("SEARCH m USING") and "INDEX messages_inbound" in inbound[0], inbound
    assert jobs[0].startswith("SEARCH j USING") and "INDEX jobs_open (final=?)" in jobs[0], jobs
    for step in inbound + jobs:
        assert not step.startswith("SCAN"), step


def sample(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(NAME)


class Clock:
    """A fixed time that counts the computations asking for it."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


async def until(condition: Callable[[], bool]) -> None:
    """Wait (10 s at most) for `condition`."""
    async with asyncio.timeout(10):
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_the_gauge_is_absent_until_caught_up_then_follows_the_index(
    index: Index, kit: Any, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    gauge = OptionalGauge(NAME, "test", registry=registry)
    caught_up = asyncio.Event()
    clock = Clock(kit.T0.timestamp() + 1000)
    await index.index_events([(0, kit.batch(kit.received("Q1", at=3)))])
    exporting = asyncio.create_task(export_oldest_open(index.path, caught_up, gauge=gauge, interval=0.01, clock=clock))
    try:
        await asyncio.sleep(0.05)
        assert clock.calls == 0 and sample(registry) is None
        exposed = generate_latest(registry).decode().splitlines()
        assert not [line for line in exposed if line.startswith(NAME)]  # HELP and TYPE only, no sample
        caught_up.set()
        await until(lambda: sample(registry) == kit.T0.timestamp() + 3)
        await index.index_events([(1, kit.batch(*kit.delivered_message("Q1", at=3)[1:]))])
        await until(lambda: sample(registry) == clock.now)  # an empty queue: the time of the computation
        await index.index_events([(2, kit.batch(kit.received("Q2", at=2000)))])  # from a clock ahead of this one
        calls = clock.calls
        await until(lambda: clock.calls >= calls + 2)  # a whole computation after the event was indexed
        assert sample(registry) == clock.now
        exporting.cancel()
        (tmp_path / "gone").mkdir()
        exporting = asyncio.create_task(
            export_oldest_open(tmp_path / "gone" / "no.sqlite3", caught_up, gauge=gauge, interval=0.01)
        )
        await until(lambda: sample(registry) is None)  # an index it cannot read: no number rather than a stale one
    finally:
        exporting.cancel()
        await asyncio.gather(exporting, return_exceptions=True)


def test_the_process_gauge_is_registered_and_starts_absent() -> None:
    assert OLDEST_OPEN_MESSAGE.name == NAME and NAME in {family.name for family in REGISTRY.collect()}
    assert REGISTRY.get_sample_value(NAME) is None  # not 0, which would read as 1970 and win every min()
