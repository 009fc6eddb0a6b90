"""`kubemta_common.amqp.broker.connect` when the first attempt does not come up: the robust connection it made must
not stay behind reconnecting (its reconnection task swallows cancellation until the connection is closed, so a
service stopped while connecting, or a test's event loop, never finished: found under load in CI)."""

import asyncio
import contextlib

import pytest

from kubemta_common.amqp.broker import connect

NOBODY = "amqp://guest:guest@127.0.0.1:1/"
"""Port 1 on loopback: every connection attempt is refused at once."""


def _others() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task is not asyncio.current_task() and not task.done()]


async def test_a_connect_cancelled_while_waiting_leaves_no_reconnecting_task() -> None:
    attempt = asyncio.create_task(connect(NOBODY, name="test", reconnect_interval=0.05))
    await asyncio.sleep(0)  # it now waits for the first attempt's outcome
    attempt.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
        await attempt
    await asyncio.sleep(0.3)  # several reconnect intervals: a leftover task would still be looping
    assert _others() == []


async def test_a_refused_first_attempt_raises_and_leaves_nothing_behind() -> None:
    with pytest.raises((ConnectionError, OSError)):
        async with asyncio.timeout(10):
            await connect(NOBODY, name="test", reconnect_interval=0.05)
    await asyncio.sleep(0.3)
    assert _others() == []
