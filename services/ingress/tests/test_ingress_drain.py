"""Shutdown of the SMTP listener: stop accepting, close idle sessions with 421 at once, let
transactions in progress finish within the drain period, then close what is left."""

import asyncio
import re

import pytest

MESSAGE = b"Subject: drain\r\n\r\nHello.\r\n"
SHUTDOWN = b"421 4.3.2 mx.kubemta.test Service shutting down, closing transmission channel\r\n"


async def start_transaction(client) -> None:
    assert (await client.last("MAIL FROM:<sender@example.net>")).startswith("250 ")
    assert (await client.last("RCPT TO:<user@example.org>")).startswith("250 ")


async def test_idle_sessions_close_at_once_transactions_finish(start_server):
    harness = await start_server()
    port = harness.port
    idle = await harness.connect()
    busy = await harness.connect()
    await start_transaction(busy)
    stopping = asyncio.create_task(harness.server.stop(drain_seconds=10.0))
    assert await idle.until_closed() == SHUTDOWN
    with pytest.raises(OSError):
        async with asyncio.timeout(5):
            await asyncio.open_connection("127.0.0.1", port)
    assert not stopping.done()
    assert (await busy.last("DATA")).startswith("354 ")
    await busy.send(MESSAGE + b".\r\n")
    assert re.match(r"250 2\.0\.0 Ok: queued as \S+$", (await busy.read_reply())[-1])
    assert await busy.until_closed() == SHUTDOWN
    async with asyncio.timeout(2):
        await stopping
    assert len(harness.publisher.published) == 1
    assert harness.server.session_count == 0


async def test_transaction_ended_by_rset_closes_during_drain(start_server):
    harness = await start_server()
    busy = await harness.connect()
    await start_transaction(busy)
    stopping = asyncio.create_task(harness.server.stop(drain_seconds=10.0))
    assert await busy.silent_for(0.2)
    assert await busy.last("RSET") == "250 2.0.0 OK"
    assert await busy.until_closed() == SHUTDOWN
    async with asyncio.timeout(2):
        await stopping


async def test_sessions_still_open_after_the_drain_period_are_closed(start_server):
    harness = await start_server()
    stuck = await harness.connect()
    await start_transaction(stuck)
    assert (await stuck.last("DATA")).startswith("354 ")
    await stuck.send(b"Subject: never ends\r\n")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await harness.server.stop(drain_seconds=0.3)
    assert 0.3 <= loop.time() - started < 3.0
    assert await stuck.until_closed() == SHUTDOWN
    assert harness.server.session_count == 0
    assert harness.publisher.attempts == 0


async def test_quit_during_drain_gets_only_221(start_server):
    harness = await start_server()
    busy = await harness.connect()
    await start_transaction(busy)
    stopping = asyncio.create_task(harness.server.stop(drain_seconds=10.0))
    assert await busy.silent_for(0.1)
    await busy.send(b"QUIT\r\n")
    assert await busy.until_closed() == b"221 2.0.0 Bye\r\n"
    async with asyncio.timeout(2):
        await stopping
