"""Services run on uvloop unless KUBEMTA_EVENT_LOOP=asyncio says otherwise."""

import asyncio
import socket

import pytest
import uvloop

from kubemta_common.errors import ConfigError
from kubemta_common.runtime import run
from kubemta_common.settings import ServiceSettings


@pytest.mark.parametrize(("name", "loop_type"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)])
def test_run_uses_the_chosen_loop(name: str, loop_type: type) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(asyncio.get_running_loop())

    run(main, event_loop=name)
    assert isinstance(seen[0], loop_type)
    if name == "asyncio":
        assert not isinstance(seen[0], uvloop.Loop)


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEMTA_EVENT_LOOP", raising=False)
    assert ServiceSettings.load().event_loop == "uvloop"
    monkeypatch.setenv("KUBEMTA_EVENT_LOOP", "asyncio")
    assert ServiceSettings.load().event_loop == "asyncio"
    monkeypatch.setenv("KUBEMTA_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError):
        ServiceSettings.load()


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_tcp_connections_are_nodelay_on_both_loops(name: str) -> None:
    """SMTP replies and AMQP frames are small writes: Nagle's algorithm would hold them back."""
    seen: dict[str, int] = {}

    async def main(stop: asyncio.Event) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen["server"] = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen["client"] = writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()

    run(main, event_loop=name)
    assert seen == {"server": 1, "client": 1}
