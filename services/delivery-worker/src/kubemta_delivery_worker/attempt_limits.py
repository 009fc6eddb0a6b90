"""The bounds of one delivery attempt (one job, all the hosts of its route).

- A deadline (KUBEMTA_DELIVERY_ATTEMPT_DEADLINE): every per-step timeout (connect and
  greeting, each command, the reply to the final dot; SMTP and LMTP) is clamped to the
  time left (`clamp`), no new host is tried once it has passed, and a watchdog closes
  any session of the attempt still open shortly after it (`WATCHDOG_GRACE`), for the
  waits no single timeout bounds (a server trickling the replies of a pipelined group).
  So a job never holds its consumer slot anywhere near RabbitMQ's `consumer_timeout`
  (30 minutes by default; past it RabbitMQ 3.x closes the worker's channel, cutting
  every delivery on it, and 4.x cancels the consumer).
- Host caps as in Postfix: at most `addresses` route hosts tried per attempt
  (smtp_mx_address_limit, 5) and at most `sessions` hosts whose session got as far as
  the server's 220 greeting (smtp_mx_session_limit, 2; hosts that fail before the
  greeting do not count). 0 means no limit, as in Postfix.

The deadline's time is the event loop's clock, the one asyncio's timeouts use.
"""

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from kubemta_common.config_types import format_duration
from kubemta_delivery_worker.settings import (
    ATTEMPT_DEADLINE_DEFAULT,
    MX_ADDRESS_LIMIT_DEFAULT,
    MX_SESSION_LIMIT_DEFAULT,
)

# How long after the deadline the watchdog closes what is still open: the clamped timeouts,
# which end exactly at the deadline, go first and give the precise "timed out while ..." reason.
WATCHDOG_GRACE = 1.0


class Closable(Protocol):
    """A session the watchdog can close at once."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """The deadline (seconds) and host caps (0: no cap) of each delivery attempt."""

    deadline: float = ATTEMPT_DEADLINE_DEFAULT
    addresses: int = MX_ADDRESS_LIMIT_DEFAULT
    sessions: int = MX_SESSION_LIMIT_DEFAULT


class AttemptDeadline:
    """The end of one attempt, `seconds` from now; a context manager that stops its watchdog on exit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._at = self._loop.time() + seconds
        self._sessions: set[Closable] = set()
        self._fired = False
        self._timer = self._loop.call_at(self._at + WATCHDOG_GRACE, self._expire)

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self._at - self._loop.time())

    @property
    def passed(self) -> bool:
        """True once the deadline is reached."""
        return self._loop.time() >= self._at

    def clamp(self, seconds: float) -> float:
        """A per-step timeout of `seconds`, cut to the time left."""
        return min(seconds, self.remaining())

    def watch(self, session: Closable) -> None:
        """Close `session` when the watchdog fires while this attempt still uses it."""
        if self._fired:
            session.close()
            return
        self._sessions.add(session)

    def unwatch(self, session: Closable) -> None:
        """`session` now belongs to another attempt."""
        self._sessions.discard(session)

    def _expire(self) -> None:
        self._fired = True
        sessions, self._sessions = self._sessions, set()
        for session in sessions:
            session.close()

    def close(self) -> None:
        """The attempt is over: the watchdog will close nothing more."""
        self._timer.cancel()
        self._sessions.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def deadline_text(deadline: AttemptDeadline) -> str:
    """The words for a passed deadline, naming the setting."""
    return (
        f"the delivery attempt's deadline ({format_duration(deadline.seconds)}, "
        "KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has passed"
    )
