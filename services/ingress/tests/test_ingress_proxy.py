"""PROXY protocol v1 and v2: from a trusted proxy the header's client address is what relay trust,
logs, the Received header and the published message use; from anyone else it is an unknown command."""

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from kubemta_ingress.listeners import IngressSession, ListenerKind, ListenerPolicy
from kubemta_ingress.proxy import ProxyTrust, client_address
from kubemta_ingress.server import SessionOptions, SmtpServer
from kubemta_ingress.tls import TlsContextStore
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import (
    HOSTNAME,
    IO_TIMEOUT,
    RawClient,
    Servers,
    insecure_client_context,
    only_message,
)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MESSAGE = b"Subject: proxied\r\n\r\nHello.\r\n"


def v1_header(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} {port} 2525\r\n".encode()


def v2_header(client: str, port: int = 40000, *, command: int = 1) -> bytes:
    """A binary PROXY v2 header (haproxy proxy-protocol.txt section 2.2), built by hand."""
    address = ipaddress.ip_address(client)
    if address.version == 4:
        family, body = 0x11, address.packed + ipaddress.ip_address("127.0.0.1").packed + struct.pack("!HH", port, 2525)
    else:
        family, body = 0x21, address.packed + ipaddress.ip_address("::1").packed + struct.pack("!HH", port, 2525)
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


class Client(RawClient):
    async def send_message(self, recipient: str = "user@example.org") -> str:
        assert (await self.last("EHLO client.example")).startswith("250 ")
        assert (await self.last("MAIL FROM:<sender@example.net>")).startswith("250 ")
        rcpt = await self.last(f"RCPT TO:<{recipient}>")
        if not rcpt.startswith("250 "):
            return rcpt
        assert (await self.last("DATA")).startswith("354 ")
        self.writer.write(MESSAGE + b".\r\n")
        return (await self.read_reply())[-1]


type Serve = Callable[..., Awaitable[tuple[SmtpServer, FakePublisher]]]


@pytest.fixture
def serve(servers: Servers) -> Serve:
    async def start(
        trusted: tuple[str, ...] = ("127.0.0.0/8",),
        *,
        kind: ListenerKind = ListenerKind.SMTP,
        tls: TlsContextStore | None = None,
        proxy_timeout: float = 2.0,
    ) -> tuple[SmtpServer, FakePublisher]:
        trust = ProxyTrust.create([ipaddress.ip_network(net) for net in trusted], proxy_timeout)
        return await servers.start(options=SessionOptions(policy=ListenerPolicy.for_kind(kind), tls=tls, proxy=trust))

    return start


@pytest.mark.parametrize(
    ("header", "client", "literal"),
    [
        (v1_header("203.0.113.7"), "203.0.113.7", b"[203.0.113.7]"),
        (v1_header("2001:db8::7"), "2001:db8::7", b"[IPv6:2001:db8::7]"),
        (v2_header("198.51.100.9"), "198.51.100.9", b"[198.51.100.9]"),
        (v2_header("2001:db8::9"), "2001:db8::9", b"[IPv6:2001:db8::9]"),
    ],
    ids=["v1-ipv4", "v1-ipv6", "v2-ipv4", "v2-ipv6"],
)
async def test_trusted_proxy_header_sets_the_client_address(serve, header, client, literal):
    server, publisher = await serve()
    connection = await Client.open(server.port, header)
    assert (await connection.read_reply())[0].startswith("220 ")
    # relay trust uses the real client: 127.0.0.0/8 may relay, the proxied client may not
    assert (await connection.send_message("someone@elsewhere.example")).startswith("554 5.7.1 ")
    assert await connection.last("RSET") == "250 2.0.0 OK"
    assert (await connection.send_message()).startswith("250 2.0.0 Ok: queued as ")
    message = only_message(publisher)
    assert message.client_address == client
    received = message.content.split(b"\r\n\r\n")[0]
    assert b"from client.example (" + literal + b")" in received
    await connection.close()


async def test_header_and_client_hello_in_one_packet_on_smtps(serve, certificate):
    tls = TlsContextStore(*certificate)
    server, _ = await serve(kind=ListenerKind.SMTPS, tls=tls)
    context = insecure_client_context()
    with socket.create_connection(("127.0.0.1", server.port), timeout=IO_TIMEOUT) as raw:
        raw.setblocking(False)
        # the header goes first in clear text; the ClientHello follows without waiting
        raw.sendall(v2_header("192.0.2.44"))
        async with asyncio.timeout(IO_TIMEOUT):
            reader, writer = await asyncio.open_connection(sock=raw.dup(), ssl=context, server_hostname=HOSTNAME)
        connection = Client(reader, writer)
        assert (await connection.read_reply())[0].startswith("220 ")
        assert (await connection.last("EHLO client.example")).startswith("250 ")
        (session,) = [s.session for s in server._sessions]
        assert isinstance(session, IngressSession)
        assert client_address(session) == "192.0.2.44" and session.ssl is not None
        await connection.close()


async def test_address_survives_starttls(serve, certificate):
    tls = TlsContextStore(*certificate)
    server, publisher = await serve(tls=tls)
    connection = await Client.open(server.port, v1_header("203.0.113.70"))
    await connection.read_reply()
    await connection.last("EHLO client.example")
    assert await connection.last("STARTTLS") == "220 2.0.0 Ready to start TLS"
    async with asyncio.timeout(IO_TIMEOUT):
        await connection.writer.start_tls(insecure_client_context())
    assert (await connection.send_message()).startswith("250 ")
    message = only_message(publisher)
    assert message.client_address == "203.0.113.70"
    assert b"([203.0.113.70])" in message.content and b"with ESMTPS id" in message.content
    await connection.close()


async def test_trusted_peer_without_header_is_closed(serve, metrics):
    server, _ = await serve(proxy_timeout=0.3)
    before = metrics.rejected("proxy_protocol_error")
    refused = metrics.value("kubemta_smtp_connections_refused_total", reason="proxy_protocol")
    connection = await Client.open(server.port)  # says nothing: no greeting, closed after the timeout
    assert await connection.until_closed() == b""
    garbage = await Client.open(server.port, b"EHLO client.example\r\n")
    assert await garbage.until_closed() == b""
    assert metrics.rejected("proxy_protocol_error") == before + 2
    assert metrics.value("kubemta_smtp_connections_refused_total", reason="proxy_protocol") == refused + 2
    await connection.close()
    await garbage.close()


async def test_local_command_keeps_the_socket_address(serve):
    server, publisher = await serve()
    connection = await Client.open(server.port, v2_header("198.51.100.1", command=0))
    await connection.read_reply()
    assert (await connection.send_message()).startswith("250 ")
    assert only_message(publisher).client_address == "127.0.0.1"
    await connection.close()


async def test_untrusted_v1_header_is_an_unknown_command(serve, metrics):
    server, publisher = await serve(("192.0.2.0/24",))
    before = metrics.rejected("proxy_protocol_error")
    connection = await Client.open(server.port, v1_header("203.0.113.7"))
    assert (await connection.read_reply())[0].startswith("220 ")
    assert (await connection.read_reply()) == ['500 5.5.2 Error: command "PROXY" not recognized']
    assert metrics.rejected("proxy_protocol_error") == before + 1
    assert (await connection.send_message()).startswith("250 ")
    assert only_message(publisher).client_address == "127.0.0.1"
    await connection.close()


async def test_untrusted_v2_header_gets_500_and_close(serve, metrics):
    server, publisher = await serve(("192.0.2.0/24",))
    before = metrics.rejected("proxy_protocol_error")
    connection = await Client.open(server.port)
    assert (await connection.read_reply())[0].startswith("220 ")
    connection.writer.write(v2_header("203.0.113.7") + b"EHLO client.example\r\n")
    assert await connection.until_closed() == b'500 5.5.2 Error: command "PROXY" not recognized\r\n'
    assert metrics.rejected("proxy_protocol_error") == before + 1
    assert publisher.attempts == 0
    await connection.close()


def test_client_address_reads_the_session_peer():
    session = IngressSession(asyncio.new_event_loop(), ListenerKind.SMTP)
    session.loop.close()
    assert client_address(session) == "unknown"
    session.peer = ("::ffff:192.0.2.1", 25, 0, 0)  # type: ignore[assignment]
    assert client_address(session) == "192.0.2.1"
    assert client_address(None) == "unknown"
