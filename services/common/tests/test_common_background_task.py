"""cancel_and_wait: a background task is cancelled and has ended when the call returns, without raising its
CancelledError to the one stopping it; a task that already ended is waited for as well."""

import asyncio

import pytest

from kubemta_common.background_task import cancel_and_wait


async def test_a_running_task_has_ended_and_its_cleanup_ran() -> None:
    cleaned: list[str] = []

    async def reader() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("closed")

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and cleaned == ["closed"]


async def test_a_finished_task_is_fine_and_its_error_still_raises() -> None:
    async def done() -> None:
        return None

    async def failed() -> None:
        raise RuntimeError("broken")

    finished, broken = asyncio.create_task(done()), asyncio.create_task(failed())
    await asyncio.sleep(0)
    await cancel_and_wait(finished)
    with pytest.raises(RuntimeError):
        await cancel_and_wait(broken)
