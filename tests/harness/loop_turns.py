"""Counting event-loop turns, so a test can tell "in the same turn" from "one after another"."""

import asyncio
from types import TracebackType


class LoopTurns:
    """`count` grows by one every turn of the running loop (a callback that reschedules itself with `call_soon`)
    until `stop()`, or the end of a `with` block."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()

    def __enter__(self) -> "LoopTurns":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
