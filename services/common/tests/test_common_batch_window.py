"""The consumer's batch window (amqp/batch_window.py): deliveries that arrive while a window is open start
together, in one loop turn, when it ends, when the prefetch is full, or when the consumer stops."""

import asyncio

import pytest

from kubemta_common.amqp.batch_window import BatchWindow
from tests.harness.loop_turns import LoopTurns


async def released_turns(window: BatchWindow, turns: LoopTurns, held: list[int]) -> list[int]:
    """Start one waiter per entry of `held` (its count of held deliveries), one loop turn apart; the turn each
    was released in."""
    released: list[int] = []

    async def wait(count: int) -> None:
        await window.wait(held=count)
        released.append(turns.count)

    tasks = []
    for count in held:
        tasks.append(asyncio.create_task(wait(count)))
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    return released


async def test_deliveries_of_one_window_start_in_the_same_loop_turn_when_it_ends() -> None:
    window = BatchWindow(0.05, capacity=32)
    with LoopTurns() as turns:
        started = turns.count
        released = await released_turns(window, turns, [1, 2, 3, 4])
    assert len(set(released)) == 1, released  # all four in one turn
    assert released[0] > started + 4  # not as they arrived: after the window's timer, many turns later
    assert not window.is_open


async def test_a_delivery_waits_in_the_window_until_its_time_is_up() -> None:
    window = BatchWindow(0.2, capacity=32)
    waiter = asyncio.create_task(window.wait(held=1))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not waiter.done()
    assert window.is_open
    async with asyncio.timeout(5):
        await waiter
    assert not window.is_open


async def test_a_full_prefetch_releases_the_window_at_once() -> None:
    window = BatchWindow(30, capacity=3)  # a window that would outlast the test's bound
    with LoopTurns() as turns:
        released = await released_turns(window, turns, [1, 2, 3])
    assert len(set(released)) == 1  # the third delivery filled the prefetch: all three go together, now
    assert not window.is_open


async def test_a_consumer_of_prefetch_one_never_waits() -> None:
    window = BatchWindow(30, capacity=1)
    async with asyncio.timeout(1):
        await window.wait(held=1)
    assert not window.is_open


async def test_close_releases_the_waiting_deliveries_and_a_new_one_opens_a_new_window() -> None:
    window = BatchWindow(30, capacity=32)
    waiters = [asyncio.create_task(window.wait(held=count)) for count in (1, 2)]
    await asyncio.sleep(0)
    window.close()
    async with asyncio.timeout(1):
        await asyncio.gather(*waiters)
    window.close()  # nothing open: nothing to do
    late = asyncio.create_task(window.wait(held=1))
    await asyncio.sleep(0)
    assert window.is_open and not late.done()
    window.close()
    async with asyncio.timeout(1):
        await late


async def test_a_cancelled_delivery_leaves_the_others_waiting_and_released_together() -> None:
    window = BatchWindow(0.05, capacity=32)
    cancelled = asyncio.create_task(window.wait(held=1))
    kept = asyncio.create_task(window.wait(held=2))
    await asyncio.sleep(0)
    cancelled.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not kept.done()
        await kept


async def test_a_window_of_zero_does_not_even_yield_to_the_loop() -> None:
    window = BatchWindow(0, capacity=32)
    with LoopTurns() as turns:
        before = turns.count
        await window.wait(held=1)
        assert turns.count == before
    assert not window.is_open


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BatchWindow(-0.01, capacity=1)
