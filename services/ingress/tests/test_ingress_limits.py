"""Connection, error and time limits: 421 and close, counted; a slow client (slowloris) cannot hold a
connection past the configured bounds. Short settings keep the tests fast."""

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import pytest

from kubemta_ingress.limits import ConnectionLimiter, ErrorCounter, Refusal, SessionLimits
from kubemta_ingress.proxy import ProxyTrust
from kubemta_ingress.server import SessionOptions, SmtpServer
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import RawClient, Servers, eventually


class Client(RawClient):
    async def send(self, data: bytes) -> None:
        self.writer.write(data)  # no drain: writing to a server that already closed does not raise


type Serve = Callable[..., Awaitable[tuple[SmtpServer, FakePublisher]]]


@pytest.fixture
def serve(servers: Servers) -> Serve:
    async def start(
        *,
        max_connections: int = 100,
        max_per_ip: int = 100,
        max_errors: int | None = None,
        idle: float = 10.0,
        data_timeout: float | None = None,
        session: float | None = None,
        trusted: tuple[str, ...] = (),
    ) -> tuple[SmtpServer, FakePublisher]:
        options = SessionOptions(
            proxy=ProxyTrust.create([ipaddress.ip_network(net) for net in trusted], 2.0),
            session_limits=SessionLimits(
                max_errors=max_errors, data_timeout=data_timeout, max_session_duration=session
            ),
            connections=ConnectionLimiter(max_connections, max_per_ip),
        )
        return await servers.start(timeout=idle, options=options)

    return start


async def greeted(port: int, first: bytes = b"") -> Client:
    client = await Client.open(port, first)
    assert (await client.read_reply())[0].startswith("220 ")
    return client


# -- connections -------------------------------------------------------------------------------------------


async def test_connections_per_ip(serve, metrics):
    server, _ = await serve(max_per_ip=2)
    before = metrics.rejected("too_many_connections")
    first, second = await greeted(server.port), await greeted(server.port)
    third = await Client.open(server.port)
    assert await third.until_closed() == b"421 4.7.0 mx.kubemta.test Error: too many connections from 127.0.0.1\r\n"
    assert metrics.rejected("too_many_connections") == before + 1
    assert metrics.value("kubemta_smtp_sessions_active", listener="smtp") >= 2
    await first.close()
    await eventually(lambda: server.session_count == 1)
    fourth = await greeted(server.port)  # a slot is free again
    for client in (second, third, fourth):
        await client.close()


async def test_connections_in_total(serve, metrics):
    server, _ = await serve(max_connections=1, max_per_ip=5)
    before = metrics.value("kubemta_smtp_connections_refused_total", reason="max_connections")
    first = await greeted(server.port)
    second = await Client.open(server.port)
    assert await second.until_closed() == b"421 4.7.0 mx.kubemta.test Error: too many connections\r\n"
    assert metrics.value("kubemta_smtp_connections_refused_total", reason="max_connections") == before + 1
    await first.close()
    await second.close()


async def test_per_ip_limit_counts_the_proxied_client(serve):
    server, _ = await serve(max_per_ip=1, trusted=("127.0.0.0/8",))
    one = await greeted(server.port, b"PROXY TCP4 192.0.2.1 127.0.0.1 1000 25\r\n")
    two = await greeted(server.port, b"PROXY TCP4 192.0.2.2 127.0.0.1 1000 25\r\n")
    again = await Client.open(server.port, b"PROXY TCP4 192.0.2.1 127.0.0.1 1001 25\r\n")
    assert (await again.until_closed()).startswith(
        b"421 4.7.0 mx.kubemta.test Error: too many connections from 192.0.2.1"
    )
    for client in (one, two, again):
        await client.close()


def test_limiter_releases():
    limiter = ConnectionLimiter(max_total=2, max_per_ip=1)
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") is Refusal.MAX_CONNECTIONS_PER_IP
    assert limiter.acquire("b") is None
    assert limiter.acquire("c") is Refusal.MAX_CONNECTIONS
    limiter.release("a")
    assert limiter.acquire("c") is None and limiter.total == 2


# -- errors ------------------------------------------------------------------------------------------------


async def test_too_many_errors_closes_and_ignores_what_was_pipelined(serve, metrics):
    server, publisher = await serve(max_errors=3)
    before = metrics.rejected("too_many_errors")
    client = await greeted(server.port)
    assert (await client.last("EHLO client.example")).startswith("250 ")
    client.writer.write(
        b"BOGUS\r\nRCPT TO:<user@example.org>\r\nMAIL FROM:<bad\r\n"
        b"MAIL FROM:<a@example.net>\r\nRCPT TO:<user@example.org>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n"
    )
    replies = (await client.until_closed()).decode().splitlines()
    assert [line[:3] for line in replies] == ["500", "503", "501", "421"]
    assert replies[-1] == "421 4.7.0 mx.kubemta.test Error: too many errors"
    assert metrics.rejected("too_many_errors") == before + 1
    assert publisher.attempts == 0
    await client.close()


def test_a_queued_message_resets_the_error_count():
    counter = ErrorCounter(limit=2)
    assert counter.record("554 5.7.1 no") is False
    assert counter.record("250-not final") is False and counter.record("451 4.3.0 later") is False
    counter.reset()
    assert counter.record("500 x") is False
    assert counter.record("501 y") is True


# -- time: idle, DATA, session; slowloris --------------------------------------------------------------------


async def test_idle_timeout_says_421(serve, metrics):
    server, _ = await serve(idle=0.3)
    before = metrics.rejected("timeout")
    client = await greeted(server.port)
    assert await client.until_closed() == b"421 4.4.2 mx.kubemta.test Error: timeout exceeded\r\n"
    assert metrics.rejected("timeout") == before + 1
    await client.close()


async def trickle(client: Client, byte: bytes, every: float, for_seconds: float = float("inf")) -> None:
    """Send `byte` every `every` seconds until the server closes or `for_seconds` passed (slowloris)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + for_seconds
    try:
        while loop.time() < until:
            client.writer.write(byte)
            await client.writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


async def test_slowloris_command_line_is_cut_by_the_idle_timeout(serve):
    server, _ = await serve(idle=0.5, session=30.0)
    client = await greeted(server.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sender = asyncio.create_task(trickle(client, b"N", 0.05))  # never completes a command line
    assert (await client.until_closed()).endswith(b"421 4.4.2 mx.kubemta.test Error: timeout exceeded\r\n")
    assert 0.4 <= loop.time() - started < 2.0
    sender.cancel()
    await client.close()


async def test_slowloris_data_is_cut_by_the_data_timeout(serve, metrics):
    server, publisher = await serve(idle=0.5, data_timeout=1.0, session=30.0)
    client = await greeted(server.port)
    assert (await client.last("EHLO client.example")).startswith("250 ")
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 ")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 ")
    assert (await client.last("DATA")).startswith("354 ")
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Steady bytes, never idle (0.5 s) and never done, until 0.8 s: then the data timeout (1.0 s) comes first,
    # and the client has stopped writing when the server closes, so no unread byte turns its close into a reset
    # that would discard the 421 before a slow (loaded) client reads it.
    sender = asyncio.create_task(trickle(client, b"x", 0.05, for_seconds=0.8))
    assert (await client.until_closed()).endswith(
        b"421 4.4.2 mx.kubemta.test Error: timeout exceeded while receiving the message\r\n"
    )
    assert 0.9 <= loop.time() - started < 2.5
    assert publisher.attempts == 0
    sender.cancel()
    await client.close()


async def test_slowloris_with_valid_commands_is_cut_by_the_session_limit(serve):
    server, _ = await serve(idle=0.5, session=1.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    client = await greeted(server.port)

    async def keep_alive() -> None:
        try:
            while True:
                client.writer.write(b"NOOP\r\n")
                await client.writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass

    sender = asyncio.create_task(keep_alive())
    everything = await client.until_closed()
    assert everything.endswith(b"421 4.4.2 mx.kubemta.test Error: session time limit exceeded\r\n")
    assert everything.count(b"250 2.0.0 OK") >= 3
    assert 1.4 <= loop.time() - started < 3.0
    sender.cancel()
    await client.close()


async def test_session_limit_lets_a_message_being_queued_finish(serve):
    server, publisher = await serve(session=0.5)
    publisher.hang_for = None
    client = await greeted(server.port)
    assert (await client.last("EHLO client.example")).startswith("250 ")
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 ")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 ")
    assert (await client.last("DATA")).startswith("354 ")
    original = publisher.publish

    async def slow_publish(*args, **kwargs):
        await asyncio.sleep(0.8)  # the session limit passes while the broker confirms
        await original(*args, **kwargs)

    publisher.publish = slow_publish
    client.writer.write(b"Subject: x\r\n\r\nx\r\n.\r\n")
    rest = (await client.until_closed()).decode().splitlines()
    assert rest[0].startswith("250 2.0.0 Ok: queued as ")
    assert rest[1] == "421 4.4.2 mx.kubemta.test Error: session time limit exceeded"
    assert len(publisher.published) == 1
    await client.close()
