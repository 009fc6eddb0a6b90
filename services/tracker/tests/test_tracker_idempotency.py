"""Idempotency-Key claims without a broker: the stream-order rule (claims.decide), the index (claims, releases,
a batch seen twice, prune), and the API routes over an index fed by a pump that plays the stream (validation of
hostile bodies, auth, 503 when the claim is never indexed)."""

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_tracker.api import create_app
from kubemta_tracker.claims import Claim, decide
from kubemta_tracker.context import TrackerContext
from kubemta_tracker.index import Index
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.sync import BarrierSync
from tests.harness.fake_events import RecordingEvents

READ = {"Authorization": "Bearer read-token-0123456789abcdef"}
KEY = hashlib.sha256(b"key").hexdigest()
FP1 = hashlib.sha256(b"one").hexdigest()
FP2 = hashlib.sha256(b"two").hexdigest()
TTL = 60.0


def _claim(claimant: str, at: float, place: int, released: int | None = None, fingerprint: str = FP1) -> Claim:
    return Claim(claimant, fingerprint, at, (place, 0), None if released is None else (released, 0))


# -- the rule ------------------------------------------------------------------------------------------------------


def test_the_first_claim_holds_the_key_and_a_later_one_sees_it() -> None:
    claims = [_claim("a", 0, 1), _claim("b", 1, 2, fingerprint=FP2)]
    assert decide(claims, "a", TTL) == (claims[0], claims[0])
    assert decide(claims, "b", TTL) == (claims[1], claims[0])
    assert decide(claims, "nobody", TTL) is None


def test_a_release_before_the_next_claim_hands_the_key_over_and_one_after_it_does_not() -> None:
    released_before = [_claim("a", 0, 1, released=2), _claim("b", 1, 3)]
    assert decide(released_before, "b", TTL) == (released_before[1], released_before[1])
    released_after = [_claim("a", 0, 1, released=4), _claim("b", 1, 3)]
    assert decide(released_after, "b", TTL) == (released_after[1], released_after[0])


def test_a_stale_claim_is_overtaken_only_past_the_ttl() -> None:
    claims = [_claim("a", 0, 1), _claim("b", TTL, 2), _claim("c", TTL + 0.5, 3)]
    assert decide(claims, "b", TTL)[1] is claims[0]  # type: ignore[index]
    assert decide(claims, "c", TTL)[1] is claims[2]  # type: ignore[index]


def test_only_what_stands_before_a_claim_decides_it() -> None:
    """b's answer is the same whatever comes after it: what every replica agrees on."""
    first = [_claim("a", 0, 1), _claim("b", 1, 2)]
    more = [*first, _claim("c", 200, 3), _claim("d", 201, 4)]
    assert decide(first, "b", TTL) == decide(more, "b", TTL)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 300), st.booleans(), st.integers(1, 5)),
        min_size=1,
        max_size=12,
    )
)
def test_at_most_one_claim_holds_the_key_at_any_time(rows: list[tuple[float, bool, int]]) -> None:
    """Whatever the times and releases: each claim's holder is itself or an earlier claim, and no two claims that
    were each told `claimed` overlap unless the earlier one was released or went stale before the later one."""
    claims: list[Claim] = []
    for place, (at, released, gap) in enumerate(rows):
        claims.append(_claim(f"c{place}", at, place * 10, released=place * 10 + gap if released else None))
    winners: list[Claim] = []
    for claim in claims:
        decided = decide(claims, claim.claimant, TTL)
        assert decided is not None
        own, holder = decided
        assert own is claim and holder.place <= claim.place
        if holder is own:
            winners.append(own)
    for earlier, later in zip(winners, winners[1:], strict=False):
        assert (earlier.released is not None and earlier.released < later.place) or later.time - earlier.time > TTL


# -- the index -----------------------------------------------------------------------------------------------------


def _event(kind: str, event_id: str, at: float = 1_000.0, **fields: str) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(event_id=event_id, service="tracker")
    event.time.FromNanoseconds(int(at * 1e9))
    if kind == "claim":
        event.idempotency_claim.CopyFrom(events_pb2.IdempotencyClaim(**fields))
    else:
        event.idempotency_release.CopyFrom(events_pb2.IdempotencyRelease(**fields))
    return event


def _batch(*events: events_pb2.LifecycleEvent) -> bytes:
    return events_pb2.EventBatch(events=events).SerializeToString()


def _received(queue_id: str, dedup_key: str, at: float) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(event_id=f"r-{queue_id}", queue_id=queue_id, service="ingress")
    event.time.FromNanoseconds(int(at * 1e9))
    event.received.dedup_key = dedup_key
    event.received.arrival_time.FromNanoseconds(int(at * 1e9))
    return event


async def test_claims_in_the_index_answer_in_stream_order_and_a_batch_seen_twice_counts_once(index: Index) -> None:
    a = _event("claim", "e1", key=KEY, fingerprint=FP1, claimant="a")
    b = _event("claim", "e2", 1_001, key=KEY, fingerprint=FP2, claimant="b")
    nonces = await index.index_events([(5, _batch(b)), (6, _batch(a)), (7, _batch(b))])
    assert nonces == ["e2", "e1", "e2"]  # every claim wakes its request
    read = index.reader.idempotency
    assert (await index.read(read, KEY, "b", 0.0, TTL)).state == "claimed"  # type: ignore[union-attr]
    answer = await index.read(read, KEY, "a", 0.0, TTL)
    assert answer is not None and (answer.state, answer.fingerprint) == ("in_progress", FP2)
    assert await index.read(read, KEY, "nobody", 0.0, TTL) is None
    assert await index.read(read, "0" * 64, "a", 0.0, TTL) is None


async def test_a_release_hands_over_and_a_received_message_makes_it_done(index: Index) -> None:
    a = _event("claim", "e1", key=KEY, fingerprint=FP1, claimant="a")
    released = _event("release", "e2", key=KEY, claimant="a")
    b = _event("claim", "e3", 1_002, key=KEY, fingerprint=FP2, claimant="b")
    await index.index_events([(1, _batch(a, released)), (2, _batch(b))])
    read = index.reader.idempotency
    assert (await index.read(read, KEY, "b", 0.0, TTL)).state == "claimed"  # type: ignore[union-attr]
    await index.index_events([(3, _batch(_received("Q1", "idem:" + KEY, 1_003)))])
    answer = await index.read(read, KEY, "b", 0.0, TTL)
    assert answer is not None and (answer.state, answer.queue_id, answer.fingerprint) == ("done", "Q1", FP2)
    outside = await index.read(read, KEY, "b", 1_004.0, TTL)  # the window ended before the message: not done
    assert outside is None  # nor is b's claim within it


async def test_a_release_seen_before_its_claim_or_for_another_claimant_changes_nothing(index: Index) -> None:
    early = _event("release", "e0", key=KEY, claimant="a")
    a = _event("claim", "e1", key=KEY, fingerprint=FP1, claimant="a")
    other = _event("release", "e2", key=KEY, claimant="z")
    b = _event("claim", "e3", key=KEY, fingerprint=FP2, claimant="b")
    await index.index_events([(1, _batch(early, a, other, b))])
    answer = await index.read(index.reader.idempotency, KEY, "b", 0.0, TTL)
    assert answer is not None and answer.state == "in_progress"


async def test_prune_drops_old_claims(index: Index) -> None:
    await index.index_events([(1, _batch(_event("claim", "e1", 100, key=KEY, fingerprint=FP1, claimant="a")))])
    await index.prune(50.0)
    assert await index.read(index.reader.idempotency, KEY, "a", 0.0, TTL) is not None
    await index.prune(200.0)
    assert await index.read(index.reader.idempotency, KEY, "a", 0.0, TTL) is None


# -- the API over an index fed by a pump ---------------------------------------------------------------------------


class Pump:
    """Plays the stream: indexes what the replica emits, one batch per event, and wakes the waiting requests."""

    def __init__(self, index: Index, sink: RecordingEvents, barriers: BarrierSync) -> None:
        self.index = index
        self.sink = sink
        self.barriers = barriers
        self.offset = 0
        self.running = True

    async def run(self) -> None:
        while True:
            while self.running and self.offset < len(self.sink.events):
                event = self.sink.events[self.offset]
                self.barriers.seen(await self.index.index_events([(self.offset, _batch(event))]))
                self.offset += 1
            await asyncio.sleep(0.005)


@pytest.fixture
async def api(index: Index) -> AsyncIterator[tuple[httpx.AsyncClient, Pump]]:
    sink = RecordingEvents(service="tracker")
    settings = TrackerSettings.model_validate(
        {
            "tracker_read_tokens": "reader:read-token-0123456789abcdef",
            "tracker_admin_tokens": "",
            "metrics_listen": "",
            "tracker_listen": "",
            "log_format": "text",
            "sync_timeout": 0.3,
            "idempotency_claim_ttl": 60.0,
        }
    )
    barriers = BarrierSync(sink, settings.sync_timeout)

    async def no_depths() -> dict[str, int]:
        return {}

    context = TrackerContext(
        settings=settings,
        index=index,
        barriers=barriers,
        broker=cast(Broker, None),
        publisher=cast(Publisher, None),
        events=sink,
        queue_depths=no_depths,
    )
    pump = Pump(index, sink, barriers)
    task = asyncio.create_task(pump.run())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(context)), base_url="http://tracker"
    ) as client:
        yield client, pump
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _claim_body(claimant: str, fingerprint: str = FP1, **extra: Any) -> dict[str, Any]:
    return {"key": KEY, "fingerprint": fingerprint, "claimant": claimant, "window": 86400, **extra}


async def test_claim_release_and_claim_again_through_the_api(api: tuple[httpx.AsyncClient, Pump]) -> None:
    client, pump = api
    first = await client.post("/v1/idempotency/claims", json=_claim_body("a"), headers=READ)
    assert first.status_code == 200 and first.json() == {"state": "claimed"}
    second = await client.post("/v1/idempotency/claims", json=_claim_body("b", FP2), headers=READ)
    assert second.json() == {"state": "in_progress", "fingerprint": FP1}
    released = await client.post("/v1/idempotency/releases", json={"key": KEY, "claimant": "a"}, headers=READ)
    assert released.status_code == 200 and released.json() == {"state": "released"}
    third = await client.post("/v1/idempotency/claims", json=_claim_body("c", FP2), headers=READ)
    assert third.json() == {"state": "claimed"}
    kinds = [event.WhichOneof("kind") for event in pump.sink.events]
    assert kinds == ["idempotency_claim", "idempotency_claim", "idempotency_release", "idempotency_claim"]


async def test_a_claim_never_indexed_is_503(api: tuple[httpx.AsyncClient, Pump]) -> None:
    client, pump = api
    pump.running = False
    answer = await client.post("/v1/idempotency/claims", json=_claim_body("a"), headers=READ)
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the index did not catch up with the events stream in time"}
    answer = await client.post("/v1/idempotency/releases", json={"key": KEY, "claimant": "a"}, headers=READ)
    assert answer.status_code == 503


async def test_claims_need_a_token(api: tuple[httpx.AsyncClient, Pump]) -> None:
    client, pump = api
    assert (await client.post("/v1/idempotency/claims", json=_claim_body("a"))).status_code == 401
    bad = {"Authorization": "Bearer wrong-token-0123456789abcdef"}
    assert (
        await client.post("/v1/idempotency/releases", json={"key": KEY, "claimant": "a"}, headers=bad)
    ).status_code == 401
    assert pump.sink.events == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_claim_body("a", key="A" * 64), "body.key"),
        (_claim_body("a", key="0" * 63), "body.key"),
        (_claim_body("a", key="../" + "0" * 61), "body.key"),
        (_claim_body("a", fingerprint="g" * 64), "body.fingerprint"),
        (_claim_body("x" * 65), "body.claimant"),
        (_claim_body(""), "body.claimant"),
        (_claim_body("a b"), "body.claimant"),
        (_claim_body("a\n"), "body.claimant"),
        (_claim_body("a", window=0), "body.window"),
        (_claim_body("a", window=-1), "body.window"),
        (_claim_body("a", window=7 * 86400 + 1), "body.window"),
        (_claim_body("a", window="soon"), "body.window"),
        (_claim_body("a", extra="x"), "body.extra"),
        ({"key": KEY}, "body.fingerprint"),
    ],
)
async def test_bad_claims_are_422_naming_the_field(
    api: tuple[httpx.AsyncClient, Pump], body: dict[str, Any], field: str
) -> None:
    client, pump = api
    answer = await client.post("/v1/idempotency/claims", json=body, headers=READ)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]
    assert pump.sink.events == []


async def test_non_finite_windows_and_non_json_bodies_are_422(api: tuple[httpx.AsyncClient, Pump]) -> None:
    client, pump = api
    for raw in (
        b'{"key": "%s", "fingerprint": "%s", "claimant": "a", "window": NaN}' % (KEY.encode(), FP1.encode()),
        b'{"key": "%s", "fingerprint": "%s", "claimant": "a", "window": Infinity}' % (KEY.encode(), FP1.encode()),
        b"not json",
        b"[]",
        b"",
    ):
        answer = await client.post(
            "/v1/idempotency/claims", content=raw, headers={**READ, "Content-Type": "application/json"}
        )
        assert answer.status_code == 422, (raw, answer.text)
    assert pump.sink.events == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80), st.text(max_size=80))
async def test_hostile_release_fields_are_refused_or_stored_as_plain_values(
    api: tuple[httpx.AsyncClient, Pump], key: str, claimant: str
) -> None:
    client, pump = api
    before = len(pump.sink.events)
    answer = await client.post("/v1/idempotency/releases", json={"key": key, "claimant": claimant}, headers=READ)
    valid = len(key) == 64 and set(key) <= set("0123456789abcdef") and 1 <= len(claimant) <= 64
    valid = valid and all(ch.isascii() and (ch.isalnum() or ch in "._~-") for ch in claimant)
    assert answer.status_code == (200 if valid else 422), answer.text
    assert len(pump.sink.events) == before + int(valid)
    for value in (key, claimant):
        if not valid and len(value) >= 20:
            assert value not in answer.text  # 422 names the field, never the value


async def test_the_answer_of_a_claim_pruned_meanwhile_is_503(api: tuple[httpx.AsyncClient, Pump]) -> None:
    client, _pump = api
    # a window so short that the claim's own time falls before it by the time it is read
    answer = await client.post("/v1/idempotency/claims", json=_claim_body("a", window=1e-9), headers=READ)
    assert answer.status_code == 503 and answer.json() == {"detail": "the claim is not in the index"}
