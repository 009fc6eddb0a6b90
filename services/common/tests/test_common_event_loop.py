"""Services run on uvloop unless KUBEMTA_EVENT_LOOP=asyncio says otherwise."""

import asyncio

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
