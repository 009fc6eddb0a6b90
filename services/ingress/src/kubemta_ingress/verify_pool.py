"""Password checks off the event loop, with bounded concurrency and a bounded queue.

A scrypt check takes about 50 ms and 16 MiB at the users file's default cost (users.py);
on the event loop it would pause every SMTP session of the process. `VerifyPool.run` runs
it on a worker thread (`asyncio.to_thread`; `hashlib.scrypt` releases the GIL), at most
`threads` at once, so the memory and CPU it takes stay bounded, and lets at most `queue`
more wait for a thread. Beyond that it refuses at once instead of queueing unbounded work:
the caller answers `454 4.7.0` (RFC 4954 section 6, temporary authentication failure) and
the client may retry.
"""

import asyncio
from collections.abc import Callable


class VerifyPoolFull(Exception):
    """`threads` checks are running and `queue` more are waiting: this one is refused."""


class VerifyPool:
    """Runs blocking checks on threads: at most `threads` at once, at most `queue` waiting."""

    def __init__(self, *, threads: int, queue: int) -> None:
        self._threads = asyncio.Semaphore(threads)
        self._capacity = threads + queue
        self._pending = 0

    @property
    def pending(self) -> int:
        """Checks running or waiting for a thread."""
        return self._pending

    async def run[T](self, check: Callable[..., T], *args: object) -> T:
        """`check(*args)` on a worker thread; raises VerifyPoolFull when the pool is full."""
        if self._pending >= self._capacity:
            raise VerifyPoolFull
        self._pending += 1
        try:
            async with self._threads:
                return await asyncio.to_thread(check, *args)
        finally:
            self._pending -= 1
