"""The coalescing AMQP writer (kubemta_common.amqp.coalescing): the writes of one loop turn reach the real writer
as one write, in order; drain, write_eof and close flush first; writes after close go straight to the real writer;
a failed flush is raised by the next write; and a Broker's connection really goes through it."""

import asyncio
from typing import Any, cast

import pytest
from aiormq.connection import TCPTransportFactory, TLSTransportFactory
from yarl import URL

from kubemta_common.amqp import coalescing
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.coalescing import CoalescingTransportFactory, CoalescingWriter
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import ROUTE
from tests.harness.rabbitmq import Vhost


class RecordingWriter:
    """A StreamWriter stand-in that records each call (one `write` per socket send)."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.fail = fail
        self.closing = False

    @property
    def transport(self) -> str:
        return "the transport"

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("unable to perform operation on transport: closed")
        self.calls.append(("write", bytes(data)))

    async def drain(self) -> None:
        self.calls.append(("drain", b""))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.calls.append(("write_eof", b""))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    async def wait_closed(self) -> None:
        self.calls.append(("wait_closed", b""))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5672)}.get(name, default)


def wrap(real: RecordingWriter) -> CoalescingWriter:
    return CoalescingWriter(cast(asyncio.StreamWriter, real))


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_the_writes_of_one_turn_are_one_write_in_order() -> None:
    real = RecordingWriter()
    writer = wrap(real)
    for frame in (b"publish-1", b"header", b"body", b"ack"):
        writer.write(frame)
    assert real.calls == [], "nothing is sent before the loop turns"
    await next_turn()
    assert real.calls == [("write", b"publish-1headerbodyack")]
    writer.write(b"next")
    await next_turn()
    assert real.calls[1:] == [("write", b"next")], "the next turn's writes are the next write"
    await next_turn()
    assert len(real.calls) == 2, "no empty writes"


async def test_drain_write_eof_and_close_flush_first() -> None:
    real = RecordingWriter()
    writer = wrap(real)
    writer.write(b"a")
    writer.write(b"b")
    await writer.drain()
    assert real.calls == [("write", b"ab"), ("drain", b"")]
    writer.write(b"close-frame")
    assert writer.can_write_eof()
    writer.write_eof()
    writer.close()
    assert writer.is_closing()
    await writer.wait_closed()
    assert real.calls[2:] == [("write", b"close-frame"), ("write_eof", b""), ("close", b""), ("wait_closed", b"")]
    await next_turn()
    assert len(real.calls) == 6, "the flush scheduled before close finds nothing left"


async def test_writes_after_close_go_straight_to_the_real_writer() -> None:
    real = RecordingWriter()
    writer = wrap(real)
    writer.close()
    writer.write(b"late")
    assert real.calls == [("close", b""), ("write", b"late")], "not buffered where nobody would flush it"
    real.fail = True
    with pytest.raises(RuntimeError):
        writer.write(b"later")  # the real writer's own error, as without the wrapper


async def test_a_failed_flush_is_raised_by_the_next_write_or_drain() -> None:
    real = RecordingWriter(fail=True)
    writer = wrap(real)
    writer.write(b"lost?")
    await next_turn()
    with pytest.raises(RuntimeError):
        writer.write(b"next")
    real.fail = False
    writer.write(b"again")
    await writer.drain()
    assert real.calls == [("write", b"again"), ("drain", b"")]


async def test_a_large_write_flushes_at_once() -> None:
    real = RecordingWriter()
    writer = wrap(real)
    writer.write(b"small")
    writer.write(b"x" * coalescing.FLUSH_NOW_BYTES)
    assert real.calls == [("write", b"small" + b"x" * coalescing.FLUSH_NOW_BYTES)]
    await next_turn()
    assert len(real.calls) == 1


async def test_delegates_transport_and_extra_info() -> None:
    real = RecordingWriter()
    writer = wrap(real)
    assert writer.wrapped is cast(asyncio.StreamWriter, real)
    assert cast(Any, writer.transport) == "the transport"
    assert writer.get_extra_info("peername") == ("127.0.0.1", 5672)
    assert writer.get_extra_info("nothing", 7) == 7


async def test_the_factory_picks_tls_for_amqps(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = RecordingWriter()

    async def tcp(self: object, url: URL, **kwargs: Any) -> tuple[object, object]:
        opened.append("tcp")
        return "reader", real

    async def tls(self: object, url: URL, **kwargs: Any) -> tuple[object, object]:
        opened.append("tls")
        return "reader", real

    monkeypatch.setattr(TCPTransportFactory, "create", tcp)
    monkeypatch.setattr(TLSTransportFactory, "create", tls)
    factory = CoalescingTransportFactory()
    reader, writer = await factory.create(URL("amqps://broker:5671/"), ssl_context_provider=None)
    assert cast(Any, reader) == "reader" and isinstance(writer, CoalescingWriter) and writer.wrapped is cast(Any, real)
    await factory.create(URL("amqp://broker:5672/"), ssl_context_provider=None)
    assert opened == ["tls", "tcp"]


@pytest.mark.broker
async def test_a_brokers_frames_go_out_coalesced(monkeypatch: pytest.MonkeyPatch, vhost: Vhost) -> None:
    """On the real broker: 50 concurrent confirmed publishes are all confirmed, in fewer socket writes than frames."""
    counts = {"frames": 0, "sends": 0}
    write, flush = CoalescingWriter.write, CoalescingWriter.flush

    def counting_write(self: CoalescingWriter, data: bytes) -> None:
        counts["frames"] += 1
        write(self, data)

    def counting_flush(self: CoalescingWriter) -> None:
        counts["sends"] += bool(cast(Any, self)._chunks)
        flush(self)

    monkeypatch.setattr(CoalescingWriter, "write", counting_write)
    monkeypatch.setattr(CoalescingWriter, "flush", counting_flush)
    broker = Broker(vhost.url, name="coalescing-test", retry_delays=(1.0,), reconnect_interval=0.5)
    runner = asyncio.create_task(broker.run())
    try:
        async with asyncio.timeout(20):
            await broker.wait_ready()
            connection = cast(Any, broker)._connection
            assert isinstance(connection.kwargs["transport_factory"], CoalescingTransportFactory)
            publisher = Publisher(broker, timeout=10.0)
            before = dict(counts)
            await asyncio.gather(
                *(publisher.publish_raw(ROUTE, b"x", message_id=f"m{n}", message_type="t") for n in range(50))
            )
        frames, sends = counts["frames"] - before["frames"], counts["sends"] - before["sends"]
        assert frames >= 50 and sends < frames, (frames, sends)
    finally:
        await broker.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
