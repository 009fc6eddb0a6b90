"""A TCP proxy the tests put between a service and RabbitMQ to inject real network faults.

- `cut()`: close every proxied connection and refuse new ones (broker "down").
- `blackhole()`: keep connections open but stop forwarding (broker silent: confirms time out).
- `hold_replies()`: forward to the broker, but hold what it sends back (its confirms arrive late).
- `restore()`: forward normally again (held bytes go on, in order).
"""

import asyncio
import contextlib


class TcpProxy:
    """Forwards listen_host:listen_port to target_host:target_port, with fault switches."""

    def __init__(self, listen_host: str, target_host: str, target_port: int) -> None:
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._replying = asyncio.Event()
        self._replying.set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._on_client, self.listen_host, port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer, self._replying)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)
        self._tasks.difference_update(pumps)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None = None
    ) -> None:
        while data := await reader.read(65536):
            await self._forwarding.wait()
            if gate is not None:
                await gate.wait()
            writer.write(data)
            await writer.drain()

    def blackhole(self) -> None:
        self._forwarding.clear()

    def hold_replies(self) -> None:
        self._replying.clear()

    async def cut(self) -> None:
        """Refuse new connections and drop the existing ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        self._forwarding.set()
        self._replying.set()
        if self._server is None:
            await self.start(self.port)

    async def stop(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
