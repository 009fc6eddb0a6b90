"""EventLog: its pure parts (stamping, the log line, the bounded buffer, batching), and against a real
RabbitMQ `events` stream: batches on the stream, confirmed records, a missing stream (mail never waits),
recovery, a full buffer, group commit while emits keep coming, and the drain on close."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import cast

import aio_pika
import pytest

from kubemta.v1 import events_pb2
from kubemta.v1.events_pb2 import EventBatch
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import EVENTS, declare_streams
from kubemta_common.events import emitter
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.events.stream_reader import StreamReader, StreamRecord
from kubemta_common.logs import message_context
from kubemta_common.metrics import EVENTS_DROPPED, EVENTS_PUBLISHED
from tests.harness.broker_fixtures import RETENTION
from tests.harness.fake_events import RecordingEvents, offline_event_log
from tests.harness.gated_channel import GatedChannel, fake_broker
from tests.harness.rabbitmq import Vhost

CONFIRM_TIMEOUT = 1.0


def received(queue_id: str = "", sender: str = "alice@example.com") -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(queue_id=queue_id, message_id="<m1@example.com>")
    event.received.sender = sender
    event.received.recipients.append("bob@example.org")
    event.received.headers = b"Subject: secret\r\n"
    return event


def numbered(index: int) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(queue_id=f"Q{index:06d}")
    event.signed.signatures.append(f"d=example.com s=s{index}")
    return event


def dropped() -> float:
    return float(EVENTS_DROPPED._value.get())


def published() -> float:
    return float(EVENTS_PUBLISHED._value.get())


def offline_log(buffer: int = 100) -> EventLog:
    """An EventLog on a broker that never connects."""
    return offline_event_log(buffer=buffer, confirm_timeout=CONFIRM_TIMEOUT)


# --- pure parts ----------------------------------------------------------------------------------------------


def test_event_kind_names_the_oneof() -> None:
    assert event_kind(received()) == "received"
    assert event_kind(events_pb2.LifecycleEvent()) == ""


def test_emit_stamps_ids_time_service_source_and_the_log_context() -> None:
    log = offline_log()
    event = received()
    with message_context("QCTX0001", job_id="QCTX0001.example.org"):
        log.emit(event)
    assert len(event.event_id) == 24
    assert event.HasField("time")
    assert event.service == "ingress"
    assert "/" in event.source
    assert event.queue_id == "QCTX0001"
    assert event.job_id == "QCTX0001.example.org"
    kept = received(queue_id="QOWN")
    kept.event_id = "given"
    kept.service = "tracker"
    with message_context("QCTX0001"):
        log.emit(kept)
    assert (kept.event_id, kept.service, kept.queue_id) == ("given", "tracker", "QOWN")
    assert log.buffered == 2


def test_each_event_is_one_info_line_without_the_headers(caplog: pytest.LogCaptureFixture) -> None:
    log = offline_log()
    with caplog.at_level(logging.INFO, logger="kubemta.events"):
        log.emit(received(queue_id="Q1", sender="evil\r\nforged"))
    lines = [record for record in caplog.records if record.name == "kubemta.events"]
    assert len(lines) == 1
    line = lines[0]
    assert line.levelno == logging.INFO
    assert line.getMessage() == "event=received"
    details = getattr(line, "details")  # noqa: B009 - set through `extra`
    assert "headers" not in details
    assert details["sender"] == "evil\r\nforged"  # kept as data; the formatters escape it


def test_a_full_buffer_drops_the_oldest_and_counts_them() -> None:
    log = offline_log(buffer=5)
    before = dropped()
    for index in range(8):
        log.emit(numbered(index))
    assert log.buffered == 5
    assert dropped() == before + 3
    kept = [events_pb2.LifecycleEvent.FromString(pending.body).queue_id for pending in log._buffer]
    assert kept == [f"Q{index:06d}" for index in range(3, 8)]


def test_a_batch_is_bounded_by_count_and_bytes() -> None:
    log = offline_log(buffer=10000)
    for index in range(emitter.BATCH_EVENTS + 10):
        log.emit(numbered(index))
    assert len(log._next_batch()) == emitter.BATCH_EVENTS
    big = offline_log(buffer=10000)
    for _ in range(5):
        event = received()
        event.received.headers = b"x" * (emitter.BATCH_BYTES // 3)
        big.emit(event)
    assert len(big._next_batch()) == 2
    huge = offline_log()
    event = received()
    event.received.headers = b"x" * (emitter.BATCH_BYTES + 1)
    huge.emit(event)
    assert len(huge._next_batch()) == 1  # one event always goes


async def test_record_before_start_or_without_a_broker_is_false_and_never_waits() -> None:
    log = offline_log()
    assert await log.record(received()) is False  # not started
    log.start()
    try:
        async with asyncio.timeout(CONFIRM_TIMEOUT + 5):
            assert await log.record(received()) is False  # no broker: the publish fails, the waiter is told
        assert log.failing
        async with asyncio.timeout(0.5):  # while failing: at once
            assert await log.record(received()) is False
        log.emit(received())
        assert log.buffered == 4
    finally:
        async with asyncio.timeout(10):
            await log.close(drain_seconds=5)


async def test_close_while_failing_does_not_wait_and_counts_what_is_lost() -> None:
    log = offline_log()
    log.start()
    assert await log.record(received()) is False
    before = dropped()
    async with asyncio.timeout(3):
        await log.close(drain_seconds=60)
    assert dropped() == before + 1


async def test_the_recording_fake_is_an_event_sink() -> None:
    sink: emitter.EventSink = RecordingEvents(recorded=False)
    with message_context("QFAKE"):
        assert await sink.record(received()) is False
        sink.emit(numbered(1))
    assert isinstance(sink, RecordingEvents)
    assert sink.kinds() == ["received", "signed"]
    assert sink.events[0].queue_id == "QFAKE"


# --- against a real stream -------------------------------------------------------------------------------------


@pytest.fixture
async def log(broker: Broker) -> AsyncIterator[EventLog]:
    log = EventLog(broker, service="ingress", buffer=1000, confirm_timeout=CONFIRM_TIMEOUT, publish_timeout=5.0)
    log.start()
    try:
        yield log
    finally:
        async with asyncio.timeout(15):
            await log.close(drain_seconds=5)


class StreamEvents:
    """Reads the events stream: every EventBatch record and the events in them, in order."""

    def __init__(self, broker: Broker) -> None:
        self.records: list[StreamRecord] = []
        self.events: list[events_pb2.LifecycleEvent] = []
        self._arrived = asyncio.Event()
        self.reader = StreamReader(broker, EVENTS, self._handle)
        self._task = asyncio.create_task(self.reader.run())

    async def _handle(self, records: list[StreamRecord]) -> None:
        for record in records:
            self.records.append(record)
            self.events.extend(events_pb2.EventBatch.FromString(record.body).events)
        self._arrived.set()

    async def until(self, count: int, within: float = 30.0) -> list[events_pb2.LifecycleEvent]:
        async with asyncio.timeout(within):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def stop(self) -> None:
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


@pytest.fixture
async def stream(broker: Broker) -> AsyncIterator[StreamEvents]:
    reader = StreamEvents(broker)
    async with asyncio.timeout(20):
        await reader.reader.caught_up.wait()  # consuming before the test publishes
    try:
        yield reader
    finally:
        await reader.stop()


async def _delete_stream(vhost: Vhost) -> None:
    connection = await aio_pika.connect(vhost.url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(EVENTS)
    finally:
        await connection.close()


async def _declare_streams(vhost: Vhost) -> None:
    connection = await aio_pika.connect(vhost.url)
    try:
        await declare_streams(connection, RETENTION)
    finally:
        await connection.close()


@pytest.mark.broker
async def test_events_reach_the_stream_as_event_batches_and_record_is_true_on_confirm(
    log: EventLog, stream: StreamEvents
) -> None:
    before = published()
    with message_context("QREAL001"):
        log.emit(received())
        assert await log.record(numbered(1)) is True
    events = await stream.until(2)
    assert [event_kind(event) for event in events] == ["received", "signed"]
    assert events[0].queue_id == "QREAL001" and events[0].service == "ingress" and events[0].event_id
    assert events[0].received.headers == b"Subject: secret\r\n"  # on the stream, only the log line leaves it out
    assert stream.records[0].timestamp is not None
    assert published() >= before + 2
    assert log.buffered == 0


@pytest.mark.broker
async def test_with_the_stream_missing_record_is_false_mail_never_waits_and_events_go_out_once_it_is_back(
    vhost: Vhost, broker: Broker, log: EventLog
) -> None:
    assert await log.record(numbered(0)) is True
    await _delete_stream(vhost)
    async with asyncio.timeout(CONFIRM_TIMEOUT + 2):  # at most the confirm timeout (and the broker's return)
        assert await log.record(numbered(1)) is False
    assert log.failing
    async with asyncio.timeout(1):  # known to be failing: no wait at all
        for index in range(2, 20):
            assert await log.record(numbered(index)) is False
            log.emit(numbered(100 + index))
    assert log.buffered >= 36
    await _declare_streams(vhost)
    reader = StreamEvents(broker)
    try:
        events = await reader.until(37, within=60)  # the retry pause is at most 5 s
        queue_ids = [event.queue_id for event in events]
        expected = [f"Q{index:06d}" for index in range(1, 20)] + [f"Q{100 + index:06d}" for index in range(2, 20)]
        assert sorted(queue_ids) == sorted(expected)
        async with asyncio.timeout(CONFIRM_TIMEOUT + 10):
            while log.failing:  # noqa: ASYNC110 - the flag clears with the publish the reader saw
                await asyncio.sleep(0.05)
        assert await log.record(numbered(999)) is True
    finally:
        await reader.stop()


@pytest.mark.broker
async def test_a_full_buffer_during_an_outage_keeps_the_newest(vhost: Vhost, broker: Broker) -> None:
    log = EventLog(broker, service="ingress", buffer=5, confirm_timeout=CONFIRM_TIMEOUT, publish_timeout=5.0)
    await _delete_stream(vhost)
    log.start()
    before = dropped()
    try:
        for index in range(8):
            log.emit(numbered(index))
        assert log.buffered == 5
        assert dropped() == before + 3
        await _declare_streams(vhost)
        reader = StreamEvents(broker)
        try:
            events = await reader.until(5, within=60)
            assert [event.queue_id for event in events] == [f"Q{index:06d}" for index in range(3, 8)]
        finally:
            await reader.stop()
    finally:
        async with asyncio.timeout(15):
            await log.close(drain_seconds=5)


@pytest.mark.broker
async def test_batches_go_out_while_emits_keep_coming(broker: Broker, stream: StreamEvents) -> None:
    log = EventLog(broker, service="ingress", buffer=150_000, confirm_timeout=10.0, publish_timeout=5.0)
    log.start()
    emitting = asyncio.Event()
    emitting.set()
    count = 0

    async def producer() -> None:
        nonlocal count
        while emitting.is_set() and count < 100_000:  # bounded: the buffer never overflows here
            for _ in range(20):
                log.emit(numbered(count))
                count += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(producer())
    try:
        await stream.until(100)  # on the stream while the producer still runs
        running = not task.done()
        confirmed = await log.record(numbered(10**6))  # confirmed amid the flow
    finally:
        emitting.clear()
        await task
    try:
        assert running
        assert confirmed is True
        await stream.until(count + 1)
        numbers = [event.queue_id for event in stream.events if event.queue_id != f"Q{10**6:06d}"]
        assert numbers == [f"Q{index:06d}" for index in range(count)]  # every event, in order
        assert 1 < len(stream.records) < count  # group commit: many events per stream message
    finally:
        async with asyncio.timeout(30):
            await log.close(drain_seconds=20)


@pytest.mark.broker
async def test_close_drains_what_is_buffered(broker: Broker, stream: StreamEvents) -> None:
    log = EventLog(broker, service="ingress", buffer=10000, confirm_timeout=CONFIRM_TIMEOUT, publish_timeout=5.0)
    log.start()
    for index in range(1200):
        log.emit(numbered(index))
    async with asyncio.timeout(15):
        await log.close(drain_seconds=10)
    assert log.buffered == 0
    events = await stream.until(1200)
    assert [event.queue_id for event in events] == [f"Q{index:06d}" for index in range(1200)]
    assert len(stream.records) >= 3  # at most BATCH_EVENTS per stream message


async def test_one_batch_in_flight_and_what_comes_meanwhile_goes_out_together() -> None:
    """Group commit with one batch in flight (MAX_IN_FLIGHT, measured cheaper for the broker and the services than
    four): a recorded event waits for the batch before it, then goes out in one stream message with every event
    emitted meanwhile, and is confirmed with it."""
    assert emitter.MAX_IN_FLIGHT == 1
    channel = GatedChannel()
    broker = cast(Broker, fake_broker(channel))
    log = EventLog(broker, service="worker", buffer=100, confirm_timeout=5.0, publish_timeout=5.0)
    log.start()
    try:
        log.emit(received())
        await channel.until(1)
        waiting = asyncio.create_task(log.record(received()))
        for _ in range(3):
            log.emit(received())
            await asyncio.sleep(0.01)
        assert len(channel.gates) == 1, "nothing else goes out while a batch waits for its confirm"
        assert not waiting.done()
        channel.gates[0].set()
        await channel.until(2)
        assert len(EventBatch.FromString(channel.bodies[1]).events) == 4, "the recorded event and the 3 emitted"
        assert not waiting.done(), "confirmed with its own batch, not the one before"
        channel.gates[1].set()
        assert await asyncio.wait_for(waiting, 5) is True
        async with asyncio.timeout(5):
            await log._drained.wait()
        assert len(channel.bodies) == 2
    finally:
        async with asyncio.timeout(10):
            await log.close(drain_seconds=1)
