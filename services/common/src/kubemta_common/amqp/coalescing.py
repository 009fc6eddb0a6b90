"""One socket write per event-loop turn for an AMQP connection, however many frames it sends.

aiormq's connection writer writes every queued frame (a publish, an ack, a stream credit) with its own
`StreamWriter.write`, and uvloop sends each at once: one syscall per frame, even when dozens are queued in the
same loop turn. `CoalescingTransportFactory` (aiormq's public `transport_factory` hook) wraps the stream writer
of the transport aiormq would have opened itself (plain TCP, or TLS for `amqps://`) in a `CoalescingWriter`:
`write()` only buffers and schedules one flush with `loop.call_soon`, which writes the joined bytes once.
Everything that waits on or ends the stream (`drain`, `write_eof`, `close`) flushes first, so what aiormq
awaits is exactly what it wrote, in order; after `close()` writes go straight to the real writer, which raises
or ignores them as it did before. A flush that fails in its callback keeps its error for the next `write` or
`drain`, which raises it, as the real writer's own `write` would have.
"""

import asyncio
from typing import Any, cast

from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

FLUSH_NOW_BYTES = 256 * 1024
"""Buffered bytes over which a write flushes at once (a large body is not held, nor copied into a bigger join)."""


class CoalescingWriter:
    """A `StreamWriter` stand-in that turns the writes of one loop turn into one write of the real writer."""

    __slots__ = ("_chunks", "_closed", "_error", "_loop", "_pending_bytes", "_scheduled", "_writer")

    def __init__(self, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._writer = writer
        self._loop = loop or asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._pending_bytes = 0
        self._scheduled = False
        self._closed = False
        self._error: BaseException | None = None

    @property
    def wrapped(self) -> asyncio.StreamWriter:
        """The real stream writer."""
        return self._writer

    @property
    def transport(self) -> asyncio.WriteTransport:
        """The real writer's transport."""
        return self._writer.transport

    def write(self, data: bytes) -> None:
        """Buffer `data` for this loop turn's single write (straight through once closed)."""
        self._raise_error()
        if self._closed:
            self._writer.write(data)
            return
        self._chunks.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_NOW_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def flush(self) -> None:
        """Write what is buffered to the real writer now, as one write."""
        chunks = self._chunks
        if not chunks:
            return
        self._chunks = []
        self._pending_bytes = 0
        self._writer.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def _flush_soon(self) -> None:
        self._scheduled = False
        try:
            self.flush()
        except Exception as exc:  # raised by the next write() or drain(), where aiormq's writer sees it
            self._error = exc

    def _raise_error(self) -> None:
        error = self._error
        if error is not None:
            self._error = None
            raise error

    async def drain(self) -> None:
        """Flush, then wait until the real writer may be written to again."""
        self._raise_error()
        self.flush()
        await self._writer.drain()

    def can_write_eof(self) -> bool:
        """Whether the real transport supports `write_eof`."""
        return self._writer.can_write_eof()

    def write_eof(self) -> None:
        """Flush, then close the write end of the real stream."""
        self.flush()
        self._writer.write_eof()

    def is_closing(self) -> bool:
        """Whether the real writer is closed or closing."""
        return self._writer.is_closing()

    def close(self) -> None:
        """Flush what is buffered, then close the real writer; later writes go straight to it."""
        self._closed = True
        try:
            self.flush()
        finally:
            self._writer.close()

    async def wait_closed(self) -> None:
        """Wait until the real writer is closed."""
        await self._writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The real transport's extra information `name`."""
        return self._writer.get_extra_info(name, default)


class CoalescingTransportFactory(TransportFactory):
    """Opens the transport aiormq would (TLS for `amqps://`, else TCP) and coalesces its writes."""

    def __init__(self) -> None:
        self._tcp = TCPTransportFactory()
        self._tls = TLSTransportFactory()

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the stream as aiormq's own factory for `url`'s scheme does, with a `CoalescingWriter`."""
        inner = self._tls if url.scheme == "amqps" else self._tcp
        reader, writer = await inner.create(url, **kwargs)
        return reader, cast(asyncio.StreamWriter, CoalescingWriter(writer))
