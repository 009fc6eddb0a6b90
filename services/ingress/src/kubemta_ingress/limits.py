"""Bounds on what one client can hold: connections, errors, and time.

Each follows a Postfix precedent:
- concurrent connections in total (`KUBEMTA_MAX_CONNECTIONS`, like smtpd's process
  limit) and per client IP (`KUBEMTA_MAX_CONNECTIONS_PER_IP`, Postfix'
  `smtpd_client_connection_count_limit`): over either, `421 4.7.0` and close, before
  the greeting. The three listeners share one `ConnectionLimiter`; the client IP is
  the real one (after a PROXY header).
- protocol errors (`KUBEMTA_MAX_ERRORS`, Postfix' `smtpd_hard_error_limit`): every 5xx
  reply to a command counts; at the limit `421 4.7.0 ... too many errors` and close.
  A queued message resets the count ("errors ... without delivering mail").
- time (RFC 5321 section 4.5.3.2 timeouts): a command must arrive within
  `KUBEMTA_SMTP_TIMEOUT` of the previous one (`smtpd_timeout`); a message's DATA must
  be complete within `KUBEMTA_DATA_RECEIVE_TIMEOUT` of the 354, however steadily it
  trickles in; a session ends after `KUBEMTA_MAX_SESSION_DURATION`. Each ends with a
  `421 4.4.2` (RFC 3463: 4.4.2 "bad connection") and close. Together they bound how
  long a slow client (slowloris) can keep a connection: never past the session limit.
"""

import enum
from collections import Counter
from dataclasses import dataclass

from kubemta_common.metrics import preinitialise
from kubemta_ingress import metrics

TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Error: too many connections"
TOO_MANY_CONNECTIONS_FROM = "421 4.7.0 {hostname} Error: too many connections from {client}"
TOO_MANY_ERRORS = "421 4.7.0 {hostname} Error: too many errors"
TIMEOUT = "421 4.4.2 {hostname} Error: timeout exceeded"
DATA_TIMEOUT = "421 4.4.2 {hostname} Error: timeout exceeded while receiving the message"
SESSION_TOO_LONG = "421 4.4.2 {hostname} Error: session time limit exceeded"


class Refusal(enum.StrEnum):
    """Label values of `kubemta_smtp_connections_refused_total{reason}`."""

    MAX_CONNECTIONS = "max_connections"
    MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"
    PROXY_PROTOCOL = "proxy_protocol"


preinitialise(metrics.SMTP_CONNECTIONS_REFUSED, reason=[refusal.value for refusal in Refusal])


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session bounds; None switches one off (the unit-test server's default)."""

    max_errors: int | None = None
    data_timeout: float | None = None
    max_session_duration: float | None = None


class ConnectionLimiter:
    """Concurrent sessions in total and per client IP, shared by all listeners."""

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self._max_total = max_total
        self._max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    @property
    def total(self) -> int:
        """Sessions admitted and not yet released."""
        return self._total

    def acquire(self, client: str) -> Refusal | None:
        """Admit a session from `client`, or say why not (nothing is held then)."""
        if self._total >= self._max_total:
            return Refusal.MAX_CONNECTIONS
        if self._per_ip[client] >= self._max_per_ip:
            return Refusal.MAX_CONNECTIONS_PER_IP
        self._total += 1
        self._per_ip[client] += 1
        return None

    def release(self, client: str) -> None:
        """A session admitted by `acquire(client)` has ended."""
        self._total -= 1
        self._per_ip[client] -= 1
        if self._per_ip[client] <= 0:
            del self._per_ip[client]


def unlimited() -> ConnectionLimiter:
    """A limiter that admits everything (for a server built without settings)."""
    return ConnectionLimiter(max_total=2**31, max_per_ip=2**31)


@dataclass(slots=True)
class ErrorCounter:
    """5xx replies in one session, against `max_errors`."""

    limit: int | None
    count: int = 0

    def record(self, reply: str) -> bool:
        """Count `reply` when it is a final 5xx; True when the limit is now reached."""
        if reply[:1] == "5" and reply[3:4] != "-":
            self.count += 1
        return self.limit is not None and self.count >= self.limit

    def reset(self) -> None:
        """A message was queued."""
        self.count = 0
