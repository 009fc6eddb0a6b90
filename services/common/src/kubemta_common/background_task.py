"""Stopping a service's background task (a stream reader, a buffered publisher): cancel it and wait until it has
finished, so nothing it holds outlives the stop."""

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; the task's own CancelledError is not passed on."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
