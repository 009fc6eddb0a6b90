"""The deadlines of one session (limits.py): the whole session and the DATA phase.

The third timer, idle time between commands, is aiosmtpd's own (`_reset_timeout`, restarted
at every command; core.py moves its deadline and re-arms it only when it fires early); the
session answers it in `_timeout_cb`. Each deadline ends the session
with `421 4.4.2`; during DATA any bytes at all count as activity for the idle timer, and the
DATA deadline bounds the rest.
"""

import asyncio
from collections.abc import Callable


class SessionTimers:
    """The session and DATA deadlines of one connection."""

    __slots__ = ("_data", "_loop", "_session")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._session: asyncio.TimerHandle | None = None
        self._data: asyncio.TimerHandle | None = None

    @property
    def data_running(self) -> bool:
        """True while the DATA deadline runs (from `354` until the message is complete)."""
        return self._data is not None

    def start_session(self, seconds: float, expired: Callable[[], None]) -> None:
        """Bound the whole session."""
        self._session = self._loop.call_later(seconds, expired)

    def start_data(self, seconds: float, expired: Callable[[], None]) -> None:
        """Bound the DATA phase; `expired` runs once, with the deadline already cleared."""

        def fire() -> None:
            self._data = None
            expired()

        self._data = self._loop.call_later(seconds, fire)

    def stop_data(self) -> None:
        """The message is complete (or the DATA command is over)."""
        if self._data is not None:
            self._data.cancel()
            self._data = None

    def stop_all(self) -> None:
        """The connection ended."""
        for handle in (self._session, self._data):
            if handle is not None:
                handle.cancel()
