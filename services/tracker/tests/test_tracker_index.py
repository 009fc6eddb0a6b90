"""The index without a broker: events in (as stream records), find/show/summary/held/duplicate answers out."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2, message_pb2
from kubemta_tracker.index import Index
from kubemta_tracker.queries import FindQuery


async def _count(index: Index, table: str) -> int:
    def count() -> int:
        return int(index.reader._db().execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    return await index.read(count)


async def test_find_by_every_key_and_timeline_in_order(index: Index, kit: Any) -> None:
    first = kit.delivered_message("Q1", recipients=("Bob@Example.org", "carol@example.org"), message_id="<m1@x>")
    second = kit.delivered_message(
        "Q2", at=100, sender="dave@example.net", message_id="<m2@x>", recipients=("erin@example.net",)
    )
    # out of order on the stream: the queue-manager's batch before the ingress' one
    await index.index_events([(0, kit.batch(*first[1:], *second[1:])), (1, kit.batch(first[0], second[0]))])
    reader = index.reader

    async def find(**query: Any) -> list[str]:
        return [row["queue_id"] for row in await index.read(reader.find, FindQuery(**query))]

    assert await find(queue_id="Q1") == ["Q1"]
    assert await find(message_id="<m1@x>") == ["Q1"]
    assert await find(message_id="m1@x") == ["Q1"]  # without the angle brackets
    assert await find(sender="ALICE@example.com") == ["Q1"]
    assert await find(recipient="bob@example.org") == ["Q1"]
    assert await find(recipient="carol@example.org") == ["Q1"]
    assert await find(sender="dave@example.net") == ["Q2"]
    assert await find(since=kit.T0.timestamp() + 50) == ["Q2"]
    assert await find(until=kit.T0.timestamp() + 50) == ["Q1"]
    assert await find() == ["Q2", "Q1"]  # newest first
    assert await find(limit=1) == ["Q2"]
    assert await find(sender="nobody@example.com") == []

    rows = await index.read(reader.find, FindQuery(queue_id="Q1"))
    assert rows[0]["recipients"] == ["Bob@Example.org", "carol@example.org"]
    assert rows[0]["state"] == "done"

    message = await index.read(reader.message, "Q1")
    assert message is not None
    assert [entry["kind"] for entry in message["timeline"]] == [
        "received",
        "queued",
        "routed",
        "attempted",
        "delivered",
    ]
    assert message["headers"] == "Subject: hello\r\n"
    assert message["trust"] == "TRUST_AUTHENTICATED"
    assert message["jobs"] == [
        {
            "job_id": "Q1.example.org",
            "domain": "example.org",
            "recipients": ["Bob@Example.org", "carol@example.org"],
            "state": "delivered",
            "attempts": 1,
            "next_attempt": None,
        }
    ]
    assert await index.read(reader.message, "nope") is None


async def test_a_batch_seen_twice_indexes_once(index: Index, kit: Any) -> None:
    events = kit.delivered_message("Q1")
    body = kit.batch(*events)
    await index.index_events([(5, body)])
    await index.index_events([(5, body), (6, body)])  # replayed after a reconnect
    assert await _count(index, "events") == 5
    assert await _count(index, "recipients") == 1
    message = await index.read(index.reader.message, "Q1")
    assert message is not None and message["jobs"][0]["attempts"] == 1
    assert await index.offset("events") == 6


async def test_states_summary_and_held(index: Index, kit: Any) -> None:
    retry_at = kit.T0.timestamp() + 400
    deferred = kit.job_event("deferred", "Q2", "slow.example", at=13, retry_queue="retry.5m")
    deferred.deferred.next_attempt.FromSeconds(int(retry_at))
    events = [
        kit.received("Q0", at=0),  # never queued: inbound
        kit.received("Q1", at=1),
        kit.queued("Q1", {"example.org": ["bob@example.org"]}, at=2),  # route
        kit.received("Q2", at=10, recipients=("x@slow.example", "y@fast.example")),
        kit.queued("Q2", {"slow.example": ["x@slow.example"], "fast.example": ["y@fast.example"]}, at=11),
        kit.job_event("routed", "Q2", "slow.example", at=12),
        deferred,
        kit.job_event("routed", "Q2", "fast.example", at=12),  # deliver
        kit.received("Q3", at=20),
        kit.queued("Q3", {"example.org": ["bob@example.org"]}, at=21),
        kit.job_event("held", "Q3", "example.org", at=22, reason="admin", release_to="route"),
        kit.received("Q4", at=30),
        kit.queued("Q4", {"example.org": ["bob@example.org"]}, at=31),
        kit.job_event("held", "Q4", "example.org", at=32, reason="poison"),
        kit.job_event("released", "Q4", "example.org", at=33, released_to="route", actor="operator"),
    ]
    await index.index_events([(0, kit.batch(*events))])
    reader = index.reader
    states = {row["queue_id"]: row["state"] for row in await index.read(reader.find, FindQuery())}
    assert states == {"Q0": "inbound", "Q1": "route", "Q2": "retry.5m", "Q3": "held", "Q4": "route"}

    async def find(**query: Any) -> list[str]:
        return sorted(row["queue_id"] for row in await index.read(reader.find, FindQuery(**query)))

    assert await find(state="inbound") == ["Q0"]
    assert await find(state="route") == ["Q1", "Q4"]
    assert await find(state="retry") == ["Q2"] == await find(state="retry.5m")
    assert await find(state="deliver") == ["Q2"]
    assert await find(state="held") == ["Q3"]
    assert await find(state="open") == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    assert await find(state="done") == []
    assert await find(domain="SLOW.example.") == ["Q2"]
    assert await find(domain="example.org", state="held") == ["Q3"]

    now = kit.T0.timestamp() + 100
    summary = await index.read(reader.summary, now)
    assert summary["stages"]["inbound"] == {"messages": 1, "oldest_seconds": 100.0}
    assert summary["stages"]["route"] == {"messages": 2, "oldest_seconds": 99.0}
    assert summary["stages"]["deliver"] == {"messages": 1, "oldest_seconds": 90.0}
    assert summary["stages"]["results"] == {"messages": 0, "oldest_seconds": 0.0}
    assert summary["stages"]["held"] == {"messages": 1, "oldest_seconds": 80.0}
    assert summary["retry"] == {"retry.5m": {"jobs": 1, "oldest_seconds": 90.0}}
    domains = {row["domain"]: row for row in summary["domains"]}
    assert domains["example.org"] == {"domain": "example.org", "jobs": 3, "deferred": 0, "oldest_seconds": 99.0}
    assert domains["slow.example"]["deferred"] == 1

    held = await index.read(reader.held)
    assert [(row["queue_id"], row["reason"], row["domain"], row["recipients"]) for row in held] == [
        ("Q3", "admin", "example.org", ["bob@example.org"])
    ]
    message = await index.read(reader.message, "Q2")
    assert message is not None
    slow = next(job for job in message["jobs"] if job["domain"] == "slow.example")
    assert slow["state"] == "retry.5m" and slow["next_attempt"] == int(retry_at)


async def test_a_later_event_indexed_first_keeps_the_state(index: Index, kit: Any) -> None:
    routed = kit.job_event("routed", "Q1", "example.org", at=5)
    delivered = kit.job_event("delivered", "Q1", "example.org", at=9, recipients=[kit.outcome("bob@example.org")])
    await index.index_events([(0, kit.batch(kit.received("Q1"), delivered))])
    await index.index_events([(1, kit.batch(kit.queued("Q1", {"example.org": ["bob@example.org"]}, at=1), routed))])
    message = await index.read(index.reader.message, "Q1")
    assert message is not None
    assert message["jobs"][0]["state"] == "delivered" and message["state"] == "done"


async def test_duplicate_lookups(index: Index, kit: Any) -> None:
    key = "ab" * 32
    attempted = kit.job_event(
        "attempted",
        "Q1",
        "example.org",
        at=3,
        attempt=2,
        recipients=[kit.outcome("a@example.org"), kit.outcome("b@example.org", message_pb2.OUTCOME_TEMPORARY)],
    )
    events = [
        kit.received("Q1", at=0, dedup_key=key),
        kit.received("Q2", at=5, dedup_key=key),  # a retry that was queued anyway
        kit.queued("Q1", {"example.org": ["a@example.org", "b@example.org"]}, at=1),
        kit.job_event("routed", "Q1", "example.org", at=2, attempt=2),
        attempted,
        kit.job_event("deferred", "Q1", "example.org", at=4, attempt=2, retry_queue="retry.5m"),
    ]
    await index.index_events([(0, kit.batch(*events))])
    reader = index.reader
    start = kit.T0.timestamp()
    assert await index.read(reader.first_queue_id, key, start - 10) == "Q1"
    assert await index.read(reader.first_queue_id, key, start + 1) == "Q2"
    assert await index.read(reader.first_queue_id, key, start + 6) is None
    assert await index.read(reader.first_queue_id, "cd" * 32, start - 10) is None
    delivered = await index.read(reader.delivered_recipients, "Q1.example.org")
    assert delivered == [
        {
            "recipient": "a@example.org",
            "outcome": "OUTCOME_DELIVERED",
            "smtp_code": 250,
            "status": "2.0.0",
            "diagnostic": "ok",
            "remote_mta": "mx",
            "bounce_class": "",  # a delivered recipient has no failure class
            "hard": False,
            "handoff": "HANDOFF_UNSPECIFIED",  # an attempt recorded without one (older workers)
        }
    ]
    assert await index.read(reader.delivered_recipients, "Q9.example.org") == []

    async def recorded(kind: str, **where: Any) -> bool:
        where.setdefault("queue_id", "")
        where.setdefault("job_id", "")
        where.setdefault("attempt", None)
        return await index.read(reader.recorded, kind, **where)

    assert await recorded("queued", queue_id="Q1")
    assert not await recorded("queued", queue_id="Q2")
    assert await recorded("routed", job_id="Q1.example.org", attempt=2)
    assert not await recorded("routed", job_id="Q1.example.org", attempt=3)
    assert await recorded("routed", job_id="Q1.example.org")
    assert await recorded("fate", job_id="Q1.example.org", attempt=2)
    assert not await recorded("fate", job_id="Q1.example.org", attempt=1)


async def test_a_queued_event_carries_the_duplicate_key_when_the_received_one_never_came(
    index: Index, kit: Any
) -> None:
    """The ingress died between the broker's confirm and its `received` event: the queue-manager's `queued` event
    still tells the tracker the message's duplicate key and arrival, so the client's retry is recognised."""
    key = "ef" * 32
    queued = kit.queued("Q5", {"example.org": ["a@example.org"]}, at=1)
    queued.queued.dedup_key = key
    queued.queued.arrival_time.FromDatetime(kit.T0)
    await index.index_events([(0, kit.batch(queued))])
    start = kit.T0.timestamp()
    assert await index.read(index.reader.first_queue_id, key, start - 10) == "Q5"
    assert await index.read(index.reader.first_queue_id, key, start + 1) is None  # outside the window: by arrival
    # the received event, when it comes too, is the same row
    await index.index_events([(1, kit.batch(kit.received("Q5", at=0, dedup_key=key)))])
    assert await index.read(index.reader.first_queue_id, key, start - 10) == "Q5"


async def test_decisions_naming_a_message_join_its_timeline(index: Index, kit: Any) -> None:
    await index.index_events([(0, kit.batch(kit.received("Q1", at=0)))])
    decision = events_pb2.AdminDecision(
        decision_id="d1",
        actor="operator",
        verb=events_pb2.DECISION_VERB_HOLD,
        selector=events_pb2.Selector(queue_id="Q1"),
    )
    decision.time.FromDatetime(kit.T0.replace(minute=5))
    other = events_pb2.AdminDecision(
        decision_id="d2", verb=events_pb2.DECISION_VERB_DELETE, selector=events_pb2.Selector(domain="example.org")
    )
    await index.index_decisions([(0, decision.SerializeToString()), (1, other.SerializeToString()), (2, b"\xff")])
    await index.index_decisions([(0, decision.SerializeToString())])
    timeline = await index.read(index.reader.timeline, "Q1")
    assert [entry["kind"] for entry in timeline] == ["received", "decision"]
    assert timeline[1]["details"]["verb"] == "DECISION_VERB_HOLD"
    assert timeline[1]["details"]["actor"] == "operator"
    assert await index.offset("decisions") == 2


async def test_undecodable_records_are_skipped_and_barriers_returned(index: Index, kit: Any) -> None:
    barrier = events_pb2.LifecycleEvent(event_id="b1", barrier=events_pb2.Barrier(nonce="n1"))
    nonces = await index.index_events([(0, b"\xff\xff"), (1, kit.batch(barrier, kit.received("Q1")))])
    assert nonces == ["n1"]
    assert await _count(index, "events") == 1  # barriers are not in the timeline


@pytest.mark.parametrize("slice_rows", [1, 2, 5000])
async def test_prune_drops_what_the_stream_dropped(index: Index, kit: Any, slice_rows: int) -> None:
    """In slices of any size (one transaction each) the prune drops the same."""
    old = kit.delivered_message("Q1", at=0, dedup_key="ab" * 32)
    old_too = kit.delivered_message("Q3", at=10, dedup_key="cd" * 32, recipients=("eve@example.org",))
    new = kit.delivered_message("Q2", at=1000, dedup_key="ef" * 32)
    await index.index_events([(0, kit.batch(*old, *old_too, *new))])
    dropped = await index.prune(kit.T0.timestamp() + 500, slice_rows=slice_rows)
    assert dropped == 10
    rows = await index.read(index.reader.find, FindQuery())
    assert [row["queue_id"] for row in rows] == ["Q2"]
    assert await index.read(index.reader.first_queue_id, "ab" * 32, 0.0) is None
    assert await index.read(index.reader.first_queue_id, "cd" * 32, 0.0) is None
    assert await index.read(index.reader.first_queue_id, "ef" * 32, 0.0) == "Q2"
    assert await _count(index, "jobs") == 1
    assert await _count(index, "recipients") == 1


ADDRESSISH = st.text(min_size=1, max_size=80)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sender=ADDRESSISH, recipient=ADDRESSISH, message_id=ADDRESSISH)
async def test_hostile_envelope_values_are_stored_and_found_as_given(
    index: Index, kit: Any, sender: str, recipient: str, message_id: str
) -> None:
    queue_id = f"H{kit.T0.timestamp():.0f}{abs(hash((sender, recipient, message_id))):x}"
    event = kit.received(queue_id, sender=sender, recipients=(recipient,), message_id=message_id)
    await index.index_events([(0, kit.batch(event))])
    reader = index.reader
    for query in (FindQuery(sender=sender), FindQuery(recipient=recipient), FindQuery(message_id=message_id)):
        if query.sender == "<>":
            continue  # "<>" asks for the null sender
        found = [row["queue_id"] for row in await index.read(reader.find, query)]
        assert queue_id in found, query
    shown = await index.read(reader.message, queue_id)
    assert shown is not None
    assert (shown["sender"], shown["recipients"], shown["message_id"]) == (sender, [recipient], message_id)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_any_order_and_any_replays_end_in_the_same_index(tmp_path_factory: Any, kit: Any, data: Any) -> None:
    deferred = kit.job_event("deferred", "Q2", "b.example", at=14, retry_queue="retry.5m")
    events = [
        *kit.delivered_message("Q1"),
        kit.received("Q2", at=10, recipients=("x@a.example", "y@b.example")),
        kit.queued("Q2", {"a.example": ["x@a.example"], "b.example": ["y@b.example"]}, at=11),
        kit.job_event("routed", "Q2", "a.example", at=12),
        kit.job_event("held", "Q2", "a.example", at=13, reason="admin"),
        kit.job_event("routed", "Q2", "b.example", at=12.5),  # (same-time events keep the order they came in)
        deferred,
        kit.job_event("released", "Q2", "a.example", at=15, released_to="route"),
        kit.job_event("routed", "Q2", "a.example", at=16, attempt=1),
    ]
    shuffled = data.draw(st.permutations(events))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    records = [kit.batch(*shuffled[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    replays = data.draw(st.lists(st.sampled_from(records), max_size=3))

    async def views(batches: list[bytes]) -> tuple[Any, ...]:
        index = Index(tmp_path_factory.mktemp("order") / "index.sqlite3")
        await index.open()
        try:
            for offset, body in enumerate(batches):
                await index.index_events([(offset, body)])
            reader = index.reader
            return (
                await index.read(reader.find, FindQuery()),
                await index.read(reader.message, "Q1"),
                await index.read(reader.message, "Q2"),
                await index.read(reader.summary, kit.T0.timestamp() + 100),
                await index.read(reader.held),
            )
        finally:
            await index.close()

    assert await views([*records, *replays]) == await views([kit.batch(*events)])


async def test_admin_actions_naming_a_message_join_its_timeline(index: Index, kit: Any) -> None:
    action = kit.event(
        "admin_action",
        events_pb2.AdminAction(
            actor="operator", verb="hold", selector=events_pb2.Selector(queue_id="Q1"), affected=1, decision_id="d1"
        ),
        queue_id="",
        at=30,
        service="tracker",
    )
    by_domain = kit.event(
        "admin_action",
        events_pb2.AdminAction(actor="operator", verb="flush", selector=events_pb2.Selector(domain="example.org")),
        queue_id="",
        at=31,
        service="tracker",
    )
    await index.index_events([(0, kit.batch(kit.received("Q1"), action, by_domain))])
    timeline = await index.read(index.reader.timeline, "Q1")
    assert [(entry["kind"], entry["service"]) for entry in timeline] == [
        ("received", "test"),
        ("admin_action", "tracker"),
    ]
    assert timeline[1]["details"]["actor"] == "operator" and timeline[1]["details"]["verb"] == "hold"
    assert await _count(index, "events") == 3  # the flush by domain is indexed, in no message's timeline
