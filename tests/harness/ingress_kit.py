"""Shared helpers for the ingress tests (services/ingress/tests): a raw SMTP client on asyncio
streams, building and starting an ingress SMTP server on 127.0.0.1:0, and small waits and reads.

Test modules cannot import each other (--import-mode=importlib); they import this module as
`tests.harness.ingress_kit` (the repository root is on sys.path).
"""

import asyncio
import ipaddress
import ssl
from collections.abc import Callable
from typing import Any, Self

from kubemta.v1 import message_pb2
from kubemta_common.config_types import ListenAddress
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.handler import IngressHandler
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.server import SessionOptions, SmtpServer
from tests.harness.fake_publisher import FakePublisher

HOSTNAME = "mx.kubemta.test"
IO_TIMEOUT = 5.0


class RawClient:
    """A minimal SMTP client on asyncio streams: every read is bounded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting: list[str] = []

    @classmethod
    async def open(
        cls,
        port: int,
        first: bytes = b"",
        *,
        tls: ssl.SSLContext | None = None,
        local_addr: tuple[str, int] | None = None,
    ) -> Self:
        """A connection to 127.0.0.1:`port` (nothing read yet); `first` is sent right away."""
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls, local_addr=local_addr)
        client = cls(reader, writer)
        if first:
            await client.send(first)
        return client

    async def read_reply(self, within: float = IO_TIMEOUT) -> list[str]:
        """One complete (possibly multi-line) reply, without line endings."""
        lines: list[str] = []
        async with asyncio.timeout(within):
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise ConnectionError(f"connection closed after {lines!r}")
                line = raw.decode("utf-8").rstrip("\r\n")
                lines.append(line)
                if line[3:4] != "-":
                    return lines

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str | bytes) -> list[str]:
        """Send one command line and read its reply."""
        await self.send((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")
        return await self.read_reply()

    async def last(self, line: str | bytes) -> str:
        """Send one command line and return the last line of its reply."""
        return (await self.command(line))[-1]

    async def until_closed(self, within: float = IO_TIMEOUT) -> bytes:
        """Everything the server still sends until it closes the connection."""
        async with asyncio.timeout(within):
            return await self.reader.read()

    async def silent_for(self, seconds: float) -> bool:
        """True when the server sends nothing for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(1)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected data from the server: {data!r}")

    async def close(self) -> None:
        await close_writer(self.writer)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a client connection, ignoring a peer that is already gone (or a TLS close that fails)."""
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass


def insecure_client_context(**limits: Any) -> ssl.SSLContext:
    """A client TLS context that accepts any certificate; `limits` set its attributes (maximum_version=...)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in limits.items():
        setattr(context, name, value)
    return context


async def eventually(condition: Callable[[], bool], within: float = IO_TIMEOUT) -> None:
    """Wait (bounded) until `condition()` holds."""
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def only_message(publisher: FakePublisher) -> message_pb2.AcceptedMessage:
    """The one message the publisher has published."""
    assert len(publisher.published) == 1
    return message_pb2.AcceptedMessage.FromString(publisher.published[0].body)


def build_server(
    publisher: FakePublisher,
    *,
    local_domains: tuple[str, ...] = ("example.org",),
    relay_networks: tuple[str, ...] = ("127.0.0.0/8",),
    max_recipients: int = 100,
    max_message_size: int = 10240000,
    timeout: float = 10.0,
    options: SessionOptions | None = None,
    port: int = 0,
    reuse_port: bool = False,
    max_hops: int = 50,
) -> SmtpServer:
    """An ingress SMTP server (not started) on 127.0.0.1:`port` that publishes to `publisher`."""
    handler = IngressHandler(
        MailAcceptance(
            hostname=HOSTNAME,
            policy=RelayPolicy.create(local_domains, [ipaddress.ip_network(net) for net in relay_networks]),
            max_recipients=max_recipients,
            max_message_size=max_message_size,
            publisher=publisher,
            max_hops=max_hops,
        )
    )
    return SmtpServer(
        handler,
        listen=ListenAddress("127.0.0.1", port),
        hostname=HOSTNAME,
        max_message_size=max_message_size,
        timeout=timeout,
        options=options,
        reuse_port=reuse_port,
    )


class Servers:
    """Ingress servers started for one test, stopped together at its end."""

    def __init__(self) -> None:
        self.started: list[SmtpServer] = []

    async def start(self, publisher: FakePublisher | None = None, **settings: Any) -> tuple[SmtpServer, FakePublisher]:
        """Build (see `build_server`) and start a server; the server and its publisher."""
        publisher = publisher or FakePublisher()
        server = build_server(publisher, **settings)
        await server.start()
        self.started.append(server)
        return server, publisher

    async def stop_all(self) -> None:
        for server in self.started:
            await server.stop(drain_seconds=1.0)
