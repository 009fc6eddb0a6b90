"""The idle timer (KUBEMTA's idle timeout between commands): every command moves its deadline, the timer armed
for an earlier deadline stays and re-arms when it fires, so a session arms it about once, not once per command;
a session that goes quiet after commands still ends with `421 4.4.2` once the last deadline passed."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.ingress_kit import RawClient, Servers

TIMEOUT = b"421 4.4.2 mx.kubemta.test Error: timeout exceeded\r\n"


@pytest.fixture
async def idle_timers(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The deadlines the running loop's idle timers are armed for (call_later goes through call_at)."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    original = loop.call_at

    def call_at(when: float, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") in ("_timeout_cb", "_idle_timer"):
            armed.append(when)
        return original(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    return armed


async def test_commands_move_the_deadline_without_a_timer_each(servers: Servers, idle_timers: list[float]) -> None:
    server, _ = await servers.start(timeout=30.0)
    client = await RawClient.open(server.port)
    client.greeting = await client.read_reply()
    await client.command("EHLO client.example")
    for _ in range(10):
        assert await client.last("NOOP") == "250 2.0.0 OK"
    assert await client.last("MAIL FROM:<a@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RSET") == "250 2.0.0 OK"
    assert len(idle_timers) == 1, idle_timers  # armed at the connection, never again in 14 commands
    await client.close()


async def test_quiet_after_commands_is_cut_at_the_last_deadline(servers: Servers, idle_timers: list[float]) -> None:
    server, _ = await servers.start(timeout=0.4)
    client = await RawClient.open(server.port)
    client.greeting = await client.read_reply()
    for _ in range(3):  # 0.6 s of commands: past the first deadline, never idle for 0.4 s
        await asyncio.sleep(0.2)
        assert await client.last("NOOP") == "250 2.0.0 OK"
    assert await client.until_closed() == TIMEOUT
    assert len(idle_timers) >= 2  # the first timer fired early and re-armed for the deadline the commands set
    await client.close()
