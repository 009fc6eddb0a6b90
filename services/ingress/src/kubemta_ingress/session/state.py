"""The state of one SMTP session, explicit: where the protocol is, how far TLS and the PROXY intake are.

aiosmtpd keeps its own state in loose attributes; the ingress' part of it lives here, one
value per question (cf. Stalwart's `State::Request | Data | Sasl`):

- `Phase`: what the session is doing. It only moves forward to `CLOSING` and `FINISHED`;
  a phase entered for one command (`HELLO`, `DATA`, `QUEUEING`) is left back to
  `COMMANDS` only if nothing closed the session meanwhile (`SessionState.leave`).
- `TlsPhase`: clear text, a handshake under way (a last reply is not written then: it
  would be clear text in the middle of a handshake), or TLS in place.
- `ProxyIntake`: a trusted peer owes a PROXY header (proxy.py); an untrusted peer's first
  bytes are checked once for a PROXY v2 header, which is refused.
"""

import enum
from dataclasses import dataclass

from kubemta_ingress.rejections import Reason


class Phase(enum.Enum):
    """Where the session is; `CLOSING` and `FINISHED` are final."""

    CONNECTING = enum.auto()
    """Built, no connection yet."""
    OPENING = enum.auto()
    """Connected: PROXY header, connection limits and implicit TLS come before the greeting."""
    COMMANDS = enum.auto()
    """Reading and answering commands."""
    HELLO = enum.auto()
    """Answering HELO or EHLO: the reply goes out verbatim (RFC 2034 section 3: no enhanced codes)."""
    DATA = enum.auto()
    """In the DATA command, reading the message."""
    QUEUEING = enum.auto()
    """The handler is queueing the message: a session end waits for the reply the client is owed."""
    CLOSING = enum.auto()
    """The last word is said: nothing more is read or answered."""
    FINISHED = enum.auto()
    """The connection is gone and its resources are released."""


IN_DATA = frozenset({Phase.DATA, Phase.QUEUEING})
CLOSED = frozenset({Phase.CLOSING, Phase.FINISHED})


class TlsPhase(enum.Enum):
    """How far TLS is on this connection."""

    PLAIN = enum.auto()
    HANDSHAKING = enum.auto()
    ACTIVE = enum.auto()


class ProxyIntake(enum.Enum):
    """What is expected of the first bytes a client sends (proxy.py)."""

    HEADER_REQUIRED = enum.auto()
    """A trusted proxy: the session reads its PROXY header before anything else."""
    UNCHECKED = enum.auto()
    """An untrusted peer whose first bytes are still to come: a PROXY v2 header there is refused."""
    CHECKED = enum.auto()
    """An untrusted peer's first bytes were seen."""


@dataclass(slots=True)
class SessionState:
    """The ingress' state of one connection (aiosmtpd's session and envelope hold the rest)."""

    phase: Phase = Phase.CONNECTING
    tls: TlsPhase = TlsPhase.PLAIN
    proxy: ProxyIntake = ProxyIntake.UNCHECKED
    draining: bool = False
    """Shutdown asked this session to close when it is not in a mail transaction."""
    admitted: str | None = None
    """The client address the connection limits admitted (released when the connection ends)."""
    pending_end: tuple[str, Reason | None] | None = None
    """A session end asked for while `QUEUEING`: the last reply and its rejection reason."""
    dsn_keywords: frozenset[str] = frozenset()
    """While MAIL or RCPT is answered: the DSN parameters it takes out of the command (esmtp_dsn.py)."""
    dsn_parameters: tuple[str, ...] = ()
    """Those the client gave in that command, as written, for the handler's hook."""
    held_lines: bytes = b""
    """The continuation lines (`250-...`) of a multi-line reply, written with its last line in one write."""

    @property
    def closed(self) -> bool:
        """True once the last word is said (or the connection is gone)."""
        return self.phase in CLOSED

    @property
    def in_data(self) -> bool:
        """True from the DATA command until its reply."""
        return self.phase in IN_DATA

    def enter(self, phase: Phase) -> None:
        """Move to `phase`, unless the session is closed."""
        if not self.closed:
            self.phase = phase

    def leave(self, *phases: Phase) -> None:
        """Back to `COMMANDS` from one of `phases` (a closed session stays closed)."""
        if self.phase in phases:
            self.phase = Phase.COMMANDS
