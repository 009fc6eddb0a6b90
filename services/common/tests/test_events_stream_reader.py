"""StreamReader against a real RabbitMQ stream: order, batches, where it starts, caught_up, reconnects."""

import asyncio
import logging
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import aio_pika
import pytest

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import EVENTS
from kubemta_common.events.stream_reader import StreamReader, StreamRecord, record_of
from tests.harness.broker_fixtures import started_broker
from tests.harness.rabbitmq import Vhost
from tests.harness.tcp_proxy import TcpProxy


async def _append(url: str, bodies: list[bytes], *, timestamp: datetime | None = None) -> None:
    """Publish each body to the events stream, confirmed, in order."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body, timestamp=timestamp), EVENTS)
    finally:
        await connection.close()


class Collector:
    """A handler that keeps every batch; `fail` makes the next calls raise."""

    def __init__(self) -> None:
        self.batches: list[list[StreamRecord]] = []
        self.fail = 0
        self.arrived = asyncio.Event()

    async def __call__(self, records: list[StreamRecord]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("handler failed")
        self.batches.append(records)
        self.arrived.set()

    @property
    def offsets(self) -> list[int]:
        return [record.offset for batch in self.batches for record in batch]

    @property
    def bodies(self) -> list[bytes]:
        return [record.body for batch in self.batches for record in batch]

    async def until(self, count: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while len(self.offsets) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def _stop(task: "asyncio.Task[None]") -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.broker
async def test_reads_everything_in_order_in_batches_and_is_caught_up_when_it_read_the_tail(
    vhost: Vhost, broker: Broker
) -> None:
    bodies = [f"record {index}".encode() for index in range(600)]
    await _append(vhost.url, bodies)
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector, prefetch=100)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(30):
            await reader.caught_up.wait()
        assert collector.offsets == list(range(600))  # everything there at the start was handled first
        assert collector.bodies == bodies
        assert max(len(batch) for batch in collector.batches) <= 50  # half the prefetch
        await _append(vhost.url, [b"later"])
        await collector.until(601)
        assert collector.bodies[-1] == b"later"
        assert collector.offsets == list(range(601))
        assert reader.last_offset == 600
    finally:
        await _stop(task)


@pytest.mark.broker
async def test_an_empty_stream_is_caught_up_and_then_followed(vhost: Vhost, broker: Broker) -> None:
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(15):
            await reader.caught_up.wait()
        assert collector.offsets == []
        await _append(vhost.url, [b"a", b"b"])
        await collector.until(2)
        assert collector.bodies == [b"a", b"b"]
    finally:
        await _stop(task)


@pytest.mark.broker
async def test_a_reader_stops_when_its_broker_closes(vhost: Vhost, caplog: pytest.LogCaptureFixture) -> None:
    """A service stopping closes its broker connection: the reader ends instead of trying to consume again (which
    logged a failure with an AssertionError at every shutdown)."""
    broker = await started_broker(vhost.url)
    reader = StreamReader(broker, EVENTS, Collector())
    task = asyncio.create_task(reader.run())
    async with asyncio.timeout(15):
        await reader.caught_up.wait()
    with caplog.at_level(logging.WARNING):
        await broker.close()
        async with asyncio.timeout(10):
            await task
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("start", "expected"), [("next", [b"new"]), ("last", [b"r4", b"new"]), (3, [b"r3", b"r4", b"new"])]
)
@pytest.mark.broker
async def test_starts_where_asked(vhost: Vhost, broker: Broker, start: int | str, expected: list[bytes]) -> None:
    await _append(vhost.url, [f"r{index}".encode() for index in range(5)])
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector, start=start)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(15):
            await reader.caught_up.wait()
        await _append(vhost.url, [b"new"])
        await collector.until(len(expected))
        await asyncio.sleep(0.2)  # nothing more arrives
        # "last" starts at the last chunk: with confirmed one-by-one publishes that is the last record
        assert collector.bodies == expected
    finally:
        await _stop(task)


@pytest.mark.broker
async def test_starts_at_a_time(vhost: Vhost, broker: Broker) -> None:
    await _append(vhost.url, [b"old"])
    await asyncio.sleep(1.5)  # chunk timestamps have millisecond precision; a clear gap
    since = datetime.now(UTC)
    await asyncio.sleep(0.5)
    await _append(vhost.url, [b"new-1", b"new-2"], timestamp=since)
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector, start=since)
    task = asyncio.create_task(reader.run())
    try:
        await collector.until(2)
        async with asyncio.timeout(15):
            await reader.caught_up.wait()
        assert collector.bodies == [b"new-1", b"new-2"]
        assert collector.batches[0][0].timestamp is not None
    finally:
        await _stop(task)


@pytest.mark.broker
async def test_a_handler_that_raises_gets_the_same_records_again(vhost: Vhost, broker: Broker) -> None:
    await _append(vhost.url, [b"a", b"b", b"c"])
    collector = Collector()
    collector.fail = 2
    reader = StreamReader(broker, EVENTS, collector)
    task = asyncio.create_task(reader.run())
    try:
        await collector.until(3)
        assert collector.bodies == [b"a", b"b", b"c"]
        assert collector.fail == 0
    finally:
        await _stop(task)


@pytest.mark.broker
async def test_after_a_reconnect_it_goes_on_after_the_last_handled_offset(vhost: Vhost) -> None:
    proxy = TcpProxy("127.0.0.1", vhost.node.host, vhost.node.port)
    await proxy.start()
    broker = await started_broker(vhost.url.replace(f":{vhost.node.port}/", f":{proxy.port}/"))
    await _append(vhost.url, [f"before {index}".encode() for index in range(50)])
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector, prefetch=10)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(30):
            await reader.caught_up.wait()
        assert collector.offsets == list(range(50))
        await proxy.cut()
        await _append(vhost.url, [f"during {index}".encode() for index in range(20)])
        await asyncio.sleep(0.5)
        await proxy.restore()
        await _append(vhost.url, [b"after"])
        await collector.until(71, within=60)
        assert collector.offsets == list(range(71))  # no record twice, none missing
        assert collector.bodies[-1] == b"after"
    finally:
        await _stop(task)
        await broker.close()
        await proxy.stop()


@pytest.mark.broker
async def test_caught_up_is_set_within_its_bound_when_the_stream_is_missing(vhost: Vhost) -> None:
    broker = Broker(vhost.url, name="test", retry_delays=(1.0,), reconnect_interval=0.2)  # no streams declared
    async with asyncio.timeout(20):
        await broker.run()
    collector = Collector()
    reader = StreamReader(broker, EVENTS, collector, caught_up_within=1.0)
    task = asyncio.create_task(reader.run())
    try:
        async with asyncio.timeout(10):
            await reader.caught_up.wait()
        assert collector.offsets == []
        assert not task.done()  # it keeps trying
    finally:
        await _stop(task)
        await broker.close()


def _delivery(headers: dict[str, Any] | None) -> Any:
    return SimpleNamespace(headers=headers, body=b"x", timestamp=None)


@pytest.mark.parametrize("offset", [None, "12", -1, True, 1.5, b"3"])
def test_a_delivery_without_a_usable_offset_is_no_record(offset: object) -> None:
    assert record_of(_delivery({"x-stream-offset": offset})) is None
    assert record_of(_delivery(None)) is None


def test_a_delivery_with_an_offset_is_a_record() -> None:
    assert record_of(_delivery({"x-stream-offset": 7})) == StreamRecord(7, b"x", None)
