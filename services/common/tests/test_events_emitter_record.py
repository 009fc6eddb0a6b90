"""EventLog.record's bookkeeping (one future and one timer per recorded event, no shield): its wait is bounded by
confirm_timeout whatever the stream does, a record given up on (timed out or cancelled) leaves the others of its
batch to be confirmed, the time stamp keeps microseconds, and the buffered gauge follows the publisher."""

import asyncio
import time
from typing import cast

from kubemta.v1 import events_pb2
from kubemta.v1.events_pb2 import EventBatch
from kubemta_common.amqp.broker import Broker
from kubemta_common.events.emitter import EventLog
from kubemta_common.metrics import EVENTS_BUFFERED
from tests.harness.gated_channel import GatedChannel, fake_broker


def gated_log(channel: GatedChannel, confirm_timeout: float) -> EventLog:
    broker = cast(Broker, fake_broker(channel))
    return EventLog(broker, service="worker", buffer=100, confirm_timeout=confirm_timeout, publish_timeout=30.0)


def signed(queue_id: str) -> events_pb2.LifecycleEvent:
    event = events_pb2.LifecycleEvent(queue_id=queue_id)
    event.signed.signatures.append("d=example.com s=s1")
    return event


def gauge() -> float:
    return float(EVENTS_BUFFERED._value.get())


async def test_a_record_the_stream_does_not_confirm_is_false_after_the_confirm_timeout_and_the_batch_goes_on() -> None:
    channel = GatedChannel()
    log = gated_log(channel, confirm_timeout=0.2)
    log.start()
    try:
        async with asyncio.timeout(5):  # far below the publish timeout (30 s): the record's own bound
            assert await log.record(signed("Q1")) is False
        assert len(channel.gates) == 1 and log.buffered == 1  # still in flight: kept, not dropped
        assert gauge() == 1
        channel.gates[0].set()  # confirmed late: nobody waits any more, nothing breaks
        async with asyncio.timeout(5):
            await log._drained.wait()
        assert not log.failing and log.buffered == 0 and gauge() == 0
    finally:
        async with asyncio.timeout(10):
            await log.close(drain_seconds=1)


async def test_a_cancelled_record_leaves_the_others_of_its_batch_to_be_confirmed() -> None:
    channel = GatedChannel()
    log = gated_log(channel, confirm_timeout=10.0)
    log.start()
    try:
        log.emit(signed("Q0"))
        await channel.until(1)  # the next records wait together for the next batch
        first = asyncio.create_task(log.record(signed("Q1")))
        second = asyncio.create_task(log.record(signed("Q2")))
        await asyncio.sleep(0.05)
        first.cancel()
        channel.gates[0].set()
        await channel.until(2)
        assert [event.queue_id for event in EventBatch.FromString(channel.bodies[1]).events] == ["Q1", "Q2"]
        channel.gates[1].set()
        async with asyncio.timeout(5):
            assert await second is True
        assert first.cancelled()
    finally:
        async with asyncio.timeout(10):
            await log.close(drain_seconds=1)


async def test_records_of_one_batch_are_each_confirmed() -> None:
    channel = GatedChannel()
    log = gated_log(channel, confirm_timeout=10.0)
    log.start()
    try:
        log.emit(signed("Q0"))
        await channel.until(1)
        waiting = [asyncio.create_task(log.record(signed(f"Q{index}"))) for index in range(1, 51)]
        await asyncio.sleep(0.05)
        assert log.buffered == 51
        channel.gates[0].set()
        await channel.until(2)
        channel.gates[1].set()
        async with asyncio.timeout(5):
            assert await asyncio.gather(*waiting) == [True] * 50
        assert len(EventBatch.FromString(channel.bodies[1]).events) == 50  # one batch, one confirm
    finally:
        async with asyncio.timeout(10):
            await log.close(drain_seconds=1)


def test_the_time_stamp_is_now_to_the_microsecond() -> None:
    log = gated_log(GatedChannel(), confirm_timeout=1.0)
    before = time.time_ns() // 1000
    event = signed("Q1")
    log.emit(event)
    after = time.time_ns() // 1000
    assert event.time.nanos % 1000 == 0
    assert before <= event.time.seconds * 1_000_000 + event.time.nanos // 1000 <= after
