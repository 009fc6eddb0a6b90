"""Consumers hold a bounded amount of message content: prefetch by the largest message, handlers by bytes."""

import asyncio

import pytest

from kubemta_common.amqp.memory import ByteGate, content_prefetch
from kubemta_common.settings import BUS_HEADROOM

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("budget", "consumers", "max_size", "expected"),
    [
        (64 * MIB, 1, 10_240_000, 5),  # 64 MiB / 11.2 MB
        (64 * MIB, 2, 10_240_000, 2),  # two content consumers share the budget
        (160 * MIB, 1, 10_240_000, 14),
        (64 * MIB, 1, 100_000, 32),  # small messages: the configured prefetch stays the bound
        (1 * MIB, 3, 50 * MIB, 1),  # never below 1
    ],
)
def test_prefetch_fits_the_largest_messages_into_the_budget(budget, consumers, max_size, expected) -> None:
    prefetch = content_prefetch(prefetch=32, budget=budget, consumers=consumers, max_message_size=max_size)
    assert prefetch == expected
    assert prefetch == 1 or prefetch * consumers * (max_size + BUS_HEADROOM) <= budget


async def test_the_gate_holds_bytes_and_a_larger_message_runs_alone() -> None:
    gate = ByteGate(100)
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def run(name: str, size: int) -> None:
        async with gate.hold(size):
            order.append(f"+{name}")
            if name == "a":
                first_in.set()
                await release.wait()
            order.append(f"-{name}")

    a = asyncio.ensure_future(run("a", 60))
    await first_in.wait()
    b = asyncio.ensure_future(run("b", 50))  # 60 + 50 > 100: waits
    c = asyncio.ensure_future(run("c", 30))  # fits beside a
    huge = asyncio.ensure_future(run("huge", 10_000))  # more than the capacity: waits for an empty gate
    async with asyncio.timeout(5):
        await c
    assert gate.used == 60 and not b.done() and not huge.done()
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(a, b, huge)
    assert order.index("-a") < order.index("+b")
    assert gate.used == 0


async def test_a_cancelled_handler_gives_its_bytes_back() -> None:
    gate = ByteGate(100)
    entered = asyncio.Event()

    async def stuck() -> None:
        async with gate.hold(80):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(stuck())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.used == 0
    async with asyncio.timeout(5), gate.hold(100):
        assert gate.used == 100
