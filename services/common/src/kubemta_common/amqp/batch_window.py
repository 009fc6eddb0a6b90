"""Holding a consumer's deliveries for a few milliseconds so that one loop turn handles them together.

At a moderate rate every delivery arrives on its own, and a stage pays for each one alone: a loop wake-up to
read it, a socket write for its outputs, another wake-up for their confirms, a write for its acknowledgement,
and the broker's channel and queue processes run as often. Held until the end of a short window, the
deliveries that arrived in it are released in the same loop turn: their outputs leave in one write
(coalescing.py), the broker confirms them together, and one `basic.ack(multiple=True)` settles them (acks.py).

A window opens when a delivery waits and none is open, and closes (releasing every delivery waiting in it)

- when its time is up (`seconds` after it opened: no delivery waits longer),
- when the consumer holds as many unfinished deliveries as its prefetch lets the broker send: the broker
  sends no more until one of them finishes, so a full prefetch never sits idle in a window (a consumer with
  prefetch 1 never waits; waiting on until every slot waits in the window was measured and gave nothing),
- or when `close` is called (the consumer stops).

Nothing is acknowledged or published while a delivery waits: the window changes when a delivery's work
starts, not what it does, so every guarantee of the consumer holds as before. A window of 0 turns it off.
"""

import asyncio


class BatchWindow:
    """One consumer's current window: deliveries wait in it until it closes."""

    __slots__ = ("_capacity", "_open", "_seconds", "_timer")

    def __init__(self, seconds: float, capacity: int) -> None:
        if seconds < 0:
            raise ValueError(f"a batch window cannot be negative: {seconds}")
        self._seconds = seconds
        self._capacity = capacity
        self._open: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def seconds(self) -> float:
        """How long a window lasts at most."""
        return self._seconds

    @property
    def is_open(self) -> bool:
        """Whether deliveries are waiting in a window now."""
        return self._open is not None

    async def wait(self, held: int) -> None:
        """Return when the window this delivery joins closes; `held` counts the consumer's unfinished
        deliveries, this one included."""
        if self._seconds == 0:
            return
        if held >= self._capacity:  # the prefetch is full: release the window now, this delivery with it
            if self._open is None:
                return
            self.close()
            await asyncio.sleep(0)  # resume in the turn the released deliveries resume in, not one before
            return
        opened = self._open
        if opened is None:
            opened = self._open = asyncio.Event()
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self.close)
        await opened.wait()

    def close(self) -> None:
        """Release every delivery waiting in the open window (none open: nothing to do)."""
        opened = self._open
        if opened is None:
            return
        self._open = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        opened.set()
