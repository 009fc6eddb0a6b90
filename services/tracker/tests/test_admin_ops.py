"""Queue administration against a real RabbitMQ (a vhost per test): flush, hold, release and delete move
messages at least once and never lose one, and every command leaves its decision and events behind."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.timestamp_pb2 import Timestamp

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.held import DECISION_ID, JOB_ID, JOB_TYPE, QUEUE_ID, RELEASE_TO, hold_job
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import DECISIONS, EVENTS, StreamRetention
from kubemta_common.amqp.topology import HELD, LARGE_BODY, ROUTE, large, retry_queue_name
from kubemta_common.errors import PublishFailed
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import event_kind
from kubemta_tracker.admin_ops import AdminOps
from kubemta_tracker.queue_scan import BrokerUnavailable
from kubemta_tracker.selectors import ALL, Selector
from tests.harness.fake_events import RecordingEvents
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker

SHORT = 8.0
"""A retry delay short enough to watch a passed-over job come back by its TTL."""
LONG = 300.0
DELAYS = [SHORT, LONG]
WITHIN = 30.0


@dataclass
class Bus:
    url: str
    broker: Broker
    publisher: Publisher
    events: RecordingEvents
    ops: AdminOps

    async def put(self, queue: str, job: message_pb2.DeliveryJob) -> None:
        await self.publisher.publish_raw(queue, job.SerializeToString(), message_id=job.job_id, message_type=JOB_TYPE)

    async def take_all(self, queue: str) -> list[AbstractIncomingMessage]:
        """Every message `queue` holds now (taken)."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            q = await channel.get_queue(queue)
            taken = []
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                taken.append(message)
            return taken
        finally:
            await connection.close()

    async def jobs(self, queue: str) -> list[message_pb2.DeliveryJob]:
        return [message_pb2.DeliveryJob.FromString(m.body) for m in await self.take_all(queue)]

    async def depth(self, queue: str) -> int:
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            count = declared.declaration_result.message_count
            assert count is not None
            return count
        finally:
            await connection.close()


def connect(url: str) -> Broker:
    return Broker(
        url,
        name="kubemta-tracker-test",
        retry_delays=DELAYS,
        reconnect_interval=0.5,
        retention=StreamRetention(events_max_age=3600, events_max_bytes=64 * 1024 * 1024, decisions_max_age=3600),
    )


@pytest.fixture
async def bus(vhost: Vhost) -> AsyncIterator[Bus]:
    broker = connect(vhost.url)
    task = asyncio.create_task(broker.run())
    async with asyncio.timeout(WITHIN):
        await broker.wait_ready()
    publisher = Publisher(broker, timeout=10.0)
    events = RecordingEvents(service="tracker")
    ops = AdminOps(broker, publisher, events, retry_delays=DELAYS, timeout=10.0)
    try:
        yield Bus(vhost.url, broker, publisher, events, ops)
    finally:
        task.cancel()
        await broker.close()


def job(
    queue_id: str, domain: str, *, sender: str = "alice@example.com", content: bytes = b"x"
) -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(
        queue_id=queue_id,
        job_id=f"{queue_id}.1",
        sender=sender,
        domain=domain,
        recipients=[f"bob@{domain}", f"carol@{domain}"],
        content=content,
        attempts=2,
        message_id=f"<{queue_id}@example.com>",
    )


async def read_stream(url: str, stream: str, done: Callable[[list[bytes]], bool]) -> list[bytes]:
    """The bodies of `stream` from its start, read until `done` says so (bounded)."""
    connection = await aio_pika.connect(url)
    bodies: list[bytes] = []
    arrived = asyncio.Event()
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(stream)

        async def on_message(message: AbstractIncomingMessage) -> None:
            bodies.append(message.body)
            await message.ack()
            arrived.set()

        await queue.consume(on_message, arguments={"x-stream-offset": "first"})
        async with asyncio.timeout(WITHIN):
            while not done(bodies):
                arrived.clear()
                await arrived.wait()
        return bodies
    finally:
        await connection.close()


async def until[T](probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Ask `probe` until `done` says its answer will do (bounded by WITHIN)."""
    for _ in range(int(WITHIN / 0.1)):
        answer = await probe()
        if done(answer):
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError("not in time")


def decisions_of(bodies: list[bytes]) -> list[events_pb2.AdminDecision]:
    return [events_pb2.AdminDecision.FromString(body) for body in bodies]


def events_of(bodies: list[bytes]) -> list[events_pb2.LifecycleEvent]:
    return [event for body in bodies for event in events_pb2.EventBatch.FromString(body).events]


# --- flush -------------------------------------------------------------------------------------------


async def test_flush_moves_only_the_domains_jobs_and_keeps_the_others(bus: Bus) -> None:
    retry = retry_queue_name(LONG)
    await bus.put(retry, job("Q1", "a.example"))
    await bus.put(retry, job("Q2", "b.example"))
    await bus.put(retry, job("Q3", "A.Example"))
    big = job("Q4", "a.example", content=b"y" * (LARGE_BODY + 1))
    await bus.put(large(retry), big)

    moved = await bus.ops.flush("a.EXAMPLE", actor="ops")

    assert moved == 3
    assert sorted(j.queue_id for j in await bus.jobs(ROUTE)) == ["Q1", "Q3"]
    assert [j.queue_id for j in await bus.jobs(large(ROUTE))] == ["Q4"]
    assert [j.queue_id for j in await bus.jobs(retry)] == ["Q2"]
    assert await bus.depth(large(retry)) == 0
    [action] = bus.events.of_kind("admin_action")
    assert action.admin_action.actor == "ops"
    assert action.admin_action.verb == "flush"
    assert action.admin_action.selector.domain == "a.EXAMPLE"
    assert action.admin_action.affected == 3


async def test_flush_of_everything(bus: Bus) -> None:
    await bus.put(retry_queue_name(LONG), job("Q1", "a.example"))
    await bus.put(retry_queue_name(SHORT), job("Q2", "b.example"))
    assert await bus.ops.flush(None, actor="ops") == 2
    assert sorted(j.queue_id for j in await bus.jobs(ROUTE)) == ["Q1", "Q2"]
    assert bus.events.of_kind("admin_action")[0].admin_action.selector.all


async def test_a_job_the_flush_passed_over_keeps_its_ttl(bus: Bus) -> None:
    """Returned with basic.reject, it still comes back to `route` when its delay is over (dead-lettered as expired)."""
    retry = retry_queue_name(SHORT)
    await bus.put(retry, job("Q1", "a.example"))
    await bus.put(retry, job("Q2", "b.example"))

    assert await bus.ops.flush("a.example", actor="ops") == 1
    [flushed] = await bus.take_all(ROUTE)
    assert message_pb2.DeliveryJob.FromString(flushed.body).queue_id == "Q1"
    assert not (flushed.headers or {}).get("x-death")  # moved by the flush, not expired

    [expired] = await until(lambda: bus.take_all(ROUTE), bool)
    assert message_pb2.DeliveryJob.FromString(expired.body).queue_id == "Q2"
    death = expired.headers["x-death"][0]  # type: ignore[index]
    assert death["queue"] == retry and death["reason"] == "expired"  # type: ignore[index,call-overload]


async def test_nothing_is_lost_when_a_publish_fails_mid_flush(bus: Bus) -> None:
    retry = retry_queue_name(LONG)
    await bus.put(retry, job("Q1", "a.example"))
    await bus.put(retry, job("Q2", "a.example"))
    await bus.put(large(retry), job("Q3", "a.example", content=b"y" * (LARGE_BODY + 1)))
    connection = await aio_pika.connect(bus.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(large(ROUTE))  # its jobs become unroutable: the publish fails
    finally:
        await connection.close()

    with pytest.raises(PublishFailed):
        await bus.ops.flush("a.example", actor="ops")

    assert sorted(j.queue_id for j in await bus.jobs(ROUTE)) == ["Q1", "Q2"]  # the small lane was done first
    await until(lambda: bus.depth(large(retry)), lambda depth: depth == 1)  # back as the scan's channel closed
    assert [j.queue_id for j in await bus.jobs(large(retry))] == ["Q3"]
    [action] = bus.events.of_kind("admin_action")
    assert action.admin_action.affected == 2  # what it did before it failed, recorded all the same


async def test_a_message_that_is_not_a_job_stays_in_the_retry_queue(bus: Bus) -> None:
    retry = retry_queue_name(LONG)
    await bus.publisher.publish_raw(retry, b"\xff\xff garbage", message_id="bad", message_type=JOB_TYPE)
    await bus.publisher.publish_raw(retry, b"", message_id="other", message_type="kubemta.v1.Surprise")
    await bus.put(retry, job("Q1", "a.example"))
    assert await bus.ops.flush(None, actor="ops") == 1
    assert sorted(m.message_id or "" for m in await bus.take_all(retry)) == ["bad", "other"]


async def test_messages_passed_over_by_many_scans_are_never_lost(bus: Bus) -> None:
    """Each scan returns what it passes over, and every return counts toward a quorum queue's delivery limit: the
    retry queues have none on 3.x and dead-letter to `route` after 20 on 4.x (an early retry); `held` has none."""
    await bus.put(retry_queue_name(LONG), job("Q1", "a.example"))
    await hold_job(bus.publisher, job("Q2", "b.example"), queue_id="Q2", job_id="Q2.1", decision_id="D1")
    for _ in range(25):
        assert await bus.ops.flush("other.example", actor="ops") == 0
        assert (await bus.ops.release(Selector(queue_id="other"), actor="ops"))[1] == 0

    async def waiting_or_retried() -> int:
        return await bus.depth(retry_queue_name(LONG)) + await bus.depth(ROUTE)

    assert await until(waiting_or_retried, lambda count: count == 1) == 1
    assert sorted(j.queue_id for j in await bus.jobs(retry_queue_name(LONG)) + await bus.jobs(ROUTE)) == ["Q1"]
    assert [j.queue_id for j in await bus.jobs(HELD)] == ["Q2"]


async def test_no_broker_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    broker = connect("amqp://guest:guest@127.0.0.1:1/none")  # never run: not connected
    ops = AdminOps(broker, Publisher(broker, timeout=1.0), RecordingEvents(), retry_delays=DELAYS, timeout=1.0)
    with pytest.raises(BrokerUnavailable):
        await ops.flush(None, actor="ops")
    with pytest.raises(BrokerUnavailable):
        await ops.hold(Selector(domain="a.example"), actor="ops")


# --- hold --------------------------------------------------------------------------------------------


async def test_hold_records_the_decision_and_moves_deferred_jobs_to_held(bus: Bus) -> None:
    await bus.put(retry_queue_name(LONG), job("Q1", "a.example", sender="Eve@Example.com"))
    await bus.put(retry_queue_name(SHORT), job("Q2", "b.example", sender="eve@example.com"))
    await bus.put(retry_queue_name(LONG), job("Q3", "a.example", sender="alice@example.com"))

    decision_id, moved = await bus.ops.hold(Selector(sender="EVE@example.COM"), actor="ops")

    assert moved == 2
    held = await bus.take_all(HELD)
    assert sorted(message_pb2.DeliveryJob.FromString(m.body).queue_id for m in held) == ["Q1", "Q2"]
    for message in held:
        headers = message.headers or {}
        assert headers[RELEASE_TO] == ROUTE
        assert headers[DECISION_ID] == decision_id
        queue_id = headers[QUEUE_ID]
        assert isinstance(queue_id, str) and queue_id in ("Q1", "Q2")
        assert headers[JOB_ID] == f"{queue_id}.1"
        assert message.type == JOB_TYPE
    assert [j.queue_id for j in await bus.jobs(retry_queue_name(LONG))] == ["Q3"]

    [decision] = decisions_of(await read_stream(bus.url, DECISIONS, lambda bodies: bool(bodies)))
    assert decision.decision_id == decision_id
    assert decision.verb == events_pb2.DECISION_VERB_HOLD
    assert decision.actor == "ops" and decision.selector.sender == "EVE@example.COM"
    assert decision.HasField("time")

    held_events = bus.events.of_kind("held")
    assert sorted(e.queue_id for e in held_events) == ["Q1", "Q2"]
    for event in held_events:
        assert event.held.reason == "admin" and event.held.actor == "ops"
        assert event.held.decision_id == decision_id and event.held.release_to == ROUTE
        assert event.job_id == f"{event.queue_id}.1" and event.attempt == 2
        assert event.message_id == f"<{event.queue_id}@example.com>"
    [action] = bus.events.of_kind("admin_action")
    assert (action.admin_action.verb, action.admin_action.affected) == ("hold", 2)
    assert action.admin_action.decision_id == decision_id


async def test_hold_fails_and_moves_nothing_when_the_decision_is_not_recorded(bus: Bus) -> None:
    await bus.put(retry_queue_name(LONG), job("Q1", "a.example"))
    connection = await aio_pika.connect(bus.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(DECISIONS)
    finally:
        await connection.close()
    with pytest.raises(PublishFailed):
        await bus.ops.hold(Selector(domain="a.example"), actor="ops")
    assert [j.queue_id for j in await bus.jobs(retry_queue_name(LONG))] == ["Q1"]
    assert await bus.depth(HELD) == 0


# --- release -----------------------------------------------------------------------------------------


async def dead_letter(bus: Bus, queue: str, body: bytes, message_type: str, message_id: str) -> None:
    """Put a message on `held` the way RabbitMQ does for poison: rejected without requeue on `queue`."""
    await bus.publisher.publish_raw(queue, body, message_id=message_id, message_type=message_type)
    connection = await aio_pika.connect(bus.url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        message = await q.get(no_ack=False)
        await message.reject(requeue=False)
    finally:
        await connection.close()
    await until(lambda: bus.depth(HELD), bool)


async def test_release_sends_admin_held_jobs_to_route_and_poison_to_its_origin(bus: Bus) -> None:
    await hold_job(bus.publisher, job("Q1", "a.example"), queue_id="Q1", job_id="Q1.1", decision_id="D1")
    poison = job("Q2", "b.example")
    await dead_letter(bus, "deliver", poison.SerializeToString(), JOB_TYPE, "Q2.1")

    decision_id, moved = await bus.ops.release(ALL, actor="ops")

    assert moved == 2
    [back] = await bus.take_all(ROUTE)
    released_job = message_pb2.DeliveryJob.FromString(back.body)
    assert released_job.queue_id == "Q1"
    assert RELEASE_TO not in (back.headers or {})
    [origin] = await bus.take_all("deliver")
    released_poison = message_pb2.DeliveryJob.FromString(origin.body)
    # marked released at the decision's time: a resolver that has not read the RELEASE yet does not hold it again
    assert released_job.released_at == released_poison.released_at != Timestamp()
    released_poison.ClearField("released_at")
    assert released_poison == poison
    assert origin.type == JOB_TYPE and origin.message_id == "Q2.1"
    assert "x-death" not in (origin.headers or {})  # a fresh start: its delivery count begins again
    assert await bus.depth(HELD) == 0
    released = {e.queue_id: e.released.released_to for e in bus.events.of_kind("released")}
    assert released == {"Q1": ROUTE, "Q2": "deliver"}
    [decision] = decisions_of(await read_stream(bus.url, DECISIONS, lambda bodies: bool(bodies)))
    assert decision.verb == events_pb2.DECISION_VERB_RELEASE and decision.selector.all
    assert decision.decision_id == decision_id
    assert released_job.released_at == decision.time


async def test_release_by_selector_leaves_the_rest_held(bus: Bus) -> None:
    await hold_job(bus.publisher, job("Q1", "a.example"), queue_id="Q1", job_id="Q1.1", decision_id="D1")
    await hold_job(bus.publisher, job("Q2", "b.example"), queue_id="Q2", job_id="Q2.1", decision_id="D1")
    await dead_letter(bus, "inbound", b"\x0a\xff not a message", "kubemta.v1.AcceptedMessage", "bad")
    accepted = message_pb2.AcceptedMessage(queue_id="Q3", sender="x@y.example", recipients=["r@b.example"])
    await dead_letter(bus, "inbound", accepted.SerializeToString(), "kubemta.v1.AcceptedMessage", "Q3")

    _, moved = await bus.ops.release(Selector(domain="B.example"), actor="ops")

    assert moved == 2
    assert [j.queue_id for j in await bus.jobs(ROUTE)] == ["Q2"]
    assert [message_pb2.AcceptedMessage.FromString(m.body).queue_id for m in await bus.take_all("inbound")] == ["Q3"]
    left = await bus.take_all(HELD)
    assert sorted(m.message_id or "" for m in left) == ["Q1.1", "bad"]


async def test_release_all_leaves_a_message_without_a_known_origin(bus: Bus) -> None:
    await bus.publisher.publish_raw(HELD, b"who knows", message_id="orphan", message_type="x")
    assert (await bus.ops.release(ALL, actor="ops"))[1] == 0
    assert [m.message_id for m in await bus.take_all(HELD)] == ["orphan"]


# --- delete ------------------------------------------------------------------------------------------


async def test_delete_drops_held_jobs_with_a_dsn_result(bus: Bus) -> None:
    await hold_job(bus.publisher, job("Q1", "a.example"), queue_id="Q1", job_id="Q1.1", decision_id="D1")
    await hold_job(bus.publisher, job("Q2", "a.example"), queue_id="Q2", job_id="Q2.1", decision_id="D1")

    decision_id, deleted = await bus.ops.delete(Selector(queue_id="Q1"), dsn=True, actor="ops")

    assert deleted == 1
    [result_message] = await bus.take_all(stages.RESULTS.queue)
    result = message_pb2.DeliveryResult.FromString(result_message.body)
    assert (result.job.queue_id, result.reporter) == ("Q1", "tracker")
    assert [(r.recipient, r.outcome, r.status, r.diagnostic) for r in result.recipients] == [
        (rcpt, message_pb2.OUTCOME_PERMANENT, "5.3.0", "deleted by the administrator") for rcpt in result.job.recipients
    ]
    assert [m.message_id for m in await bus.take_all(HELD)] == ["Q2.1"]
    [event] = bus.events.of_kind("deleted")
    assert (event.queue_id, event.deleted.stage, event.deleted.dsn_requested) == ("Q1", "held", True)
    assert event.deleted.decision_id == decision_id and list(event.deleted.recipients) == list(result.job.recipients)
    [decision] = decisions_of(await read_stream(bus.url, DECISIONS, lambda bodies: bool(bodies)))
    assert (decision.verb, decision.dsn, decision.selector.queue_id) == (events_pb2.DECISION_VERB_DELETE, True, "Q1")
    [action] = bus.events.of_kind("admin_action")
    assert action.queue_id == "Q1" and action.admin_action.dsn_requested


async def test_delete_without_dsn_sends_no_result(bus: Bus) -> None:
    await hold_job(bus.publisher, job("Q1", "a.example"), queue_id="Q1", job_id="Q1.1", decision_id="D1")
    assert (await bus.ops.delete(Selector(domain="a.example"), dsn=False, actor="ops"))[1] == 1
    assert await bus.depth(HELD) == 0
    assert await bus.depth(stages.RESULTS.queue) == 0
    assert not bus.events.of_kind("deleted")[0].deleted.dsn_requested


async def test_delete_keeps_the_held_job_when_its_dsn_result_is_not_confirmed(bus: Bus) -> None:
    await hold_job(bus.publisher, job("Q1", "a.example"), queue_id="Q1", job_id="Q1.1", decision_id="D1")
    connection = await aio_pika.connect(bus.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(stages.RESULTS.queue)
    finally:
        await connection.close()
    with pytest.raises(PublishFailed):
        await bus.ops.delete(Selector(queue_id="Q1"), dsn=True, actor="ops")
    await until(lambda: bus.depth(HELD), lambda depth: depth == 1)
    assert not bus.events.of_kind("deleted")


@pytest.mark.parametrize("command", ["hold", "delete"])
async def test_hold_and_delete_refuse_all(bus: Bus, command: str) -> None:
    with pytest.raises(ValueError, match="all"):
        if command == "hold":
            await bus.ops.hold(ALL, actor="ops")
        else:
            await bus.ops.delete(ALL, dsn=False, actor="ops")


# --- events on the stream ----------------------------------------------------------------------------


async def test_admin_actions_reach_the_events_stream(vhost: Vhost) -> None:
    broker = connect(vhost.url)
    task = asyncio.create_task(broker.run())
    events = EventLog(broker, service="tracker", buffer=1000, confirm_timeout=5.0, publish_timeout=5.0)
    try:
        async with asyncio.timeout(WITHIN):
            await broker.wait_ready()
        events.start()
        publisher = Publisher(broker, timeout=10.0)
        ops = AdminOps(broker, publisher, events, retry_delays=DELAYS, timeout=10.0)
        await publisher.publish_raw(
            retry_queue_name(LONG), job("Q1", "a.example").SerializeToString(), message_id="Q1.1", message_type=JOB_TYPE
        )
        decision_id, _ = await ops.hold(Selector(queue_id="Q1"), actor="alice")

        def seen(bodies: list[bytes]) -> bool:
            return any(event_kind(e) == "admin_action" for e in events_of(bodies))

        found = events_of(await read_stream(vhost.url, EVENTS, seen))
    finally:
        await events.close(drain_seconds=1.0)
        task.cancel()
        await broker.close()
    by_kind: dict[str, Any] = {event_kind(e): e for e in found}
    action = by_kind["admin_action"]
    assert action.service == "tracker" and action.queue_id == "Q1"
    assert (action.admin_action.actor, action.admin_action.verb, action.admin_action.affected) == ("alice", "hold", 1)
    assert action.admin_action.decision_id == decision_id
    assert by_kind["held"].queue_id == "Q1" and by_kind["held"].held.actor == "alice"
