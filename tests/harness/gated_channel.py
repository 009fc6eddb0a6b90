"""Stand-ins for the event log's tests (kubemta_common.events.emitter): a publish channel whose confirms come only
when the test opens each publish's gate, and a connected Broker whose publish channel is a given one."""

import asyncio
from types import SimpleNamespace
from typing import Any


class GatedChannel:
    """A publish channel whose publishes are confirmed only when the test opens their gate."""

    def __init__(self) -> None:
        self.gates: list[asyncio.Event] = []
        self.bodies: list[bytes] = []
        self._published = asyncio.Condition()

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.bodies.append(body)
        async with self._published:
            self._published.notify_all()
        await gate.wait()

    async def until(self, publishes: int) -> None:
        """Wait (at most 5 s) until `publishes` publishes were made."""
        async with asyncio.timeout(5), self._published:
            await self._published.wait_for(lambda: len(self.gates) >= publishes)


def fake_broker(channel: Any) -> SimpleNamespace:
    """A connected Broker stand-in whose publish channel is `channel`."""

    async def publish_channel() -> Any:
        return channel

    return SimpleNamespace(connected=True, publish_channel=publish_channel)
