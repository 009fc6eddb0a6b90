"""The session's life cycle on top of aiosmtpd's `SMTP`: connection, state, timers, the last word, drain.

- The state is `SessionState` (state.py); the deadlines are `SessionTimers` (timers.py).
- The session opens in `connection_made` (the listener counts it, the session deadline
  starts) and finishes in `connection_lost` (deadlines cancelled, the connection limit
  released). aiosmtpd starts a new `Session` after a TLS handshake (RFC 3207 section 4.2
  forgets what the client said, not who it is): the client address and listener stay.
- `_end_session` says the session's last word: a reply (none during a TLS handshake),
  close, and the handler task is cancelled, so pipelined commands behind a `421` never
  run. A session queueing a message finishes that first, so a client never loses a
  `250` it was owed.
- On shutdown an idle session is closed with `421 4.3.2` (RFC 5321 section 3.8) at
  once, a session in a mail transaction when that transaction ends.
"""

import asyncio
import collections
import logging
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta_ingress import limits, metrics, proxy, replies, stream_reader
from kubemta_ingress.esmtp_dsn import DsnEnvelope
from kubemta_ingress.listeners import IngressSession, ListenerPolicy
from kubemta_ingress.policy import client_ip
from kubemta_ingress.proxy import client_address
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.session.options import SessionOptions
from kubemta_ingress.session.state import Phase, ProxyIntake, SessionState, TlsPhase
from kubemta_ingress.session.timers import SessionTimers

logger = logging.getLogger(__name__)

CRLF = b"\r\n"
CLOCK_RESOLUTION = 0.001  # a timer may fire this much before its time (uvloop's are in milliseconds)
ABORT_AFTER_SECONDS = 5.0  # a client that stops reading cannot keep a closing connection open
PROXY_NOT_RECOGNIZED = '500 Error: command "PROXY" not recognized'  # as any unknown command (aiosmtpd's text)

AUTH_LINE_LIMIT = 12288
"""RFC 4954 section 4: an AUTH command line, and each line answering a 334, may be 12,288 octets; a
Kubernetes ServiceAccount token as the AUTH PLAIN password (1-2 KiB of JWT) needs more than the 512
of other commands (RFC 5321 section 4.5.3.1.4), which keep that limit."""
MAIL_DSN_LENGTH = len(" RET=HDRS ENVID=") + 100
"""What RFC 3461's MAIL parameters add to a MAIL command at their longest (an ENVID is at most 100 characters,
section 4.4), beyond RFC 5321's 512; aiosmtpd adds SIZE's and SMTPUTF8's room itself at EHLO."""
RCPT_DSN_LENGTH = len(" NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=") + 500
"""What NOTIFY and ORCPT add to a RCPT command at their longest (an ORCPT is at most 500 characters, section
4.2). As SIZE's room, these apply after EHLO only: after HELO a command has no parameters."""

type SessionCallback = Callable[["SessionCore"], None]


class SessionCore(SMTP):
    """One SMTP connection's life cycle and state (the TLS, intake and command layers build on it)."""

    _options: SessionOptions
    _policy: ListenerPolicy
    _on_open: SessionCallback
    _on_close: SessionCallback
    _state: SessionState
    _timers: SessionTimers
    _errors: limits.ErrorCounter
    _idle_deadline: float
    """When the idle timer ends the session (loop time), as the last `_reset_timeout` set it."""
    line_length_limit = AUTH_LINE_LIMIT + len(CRLF)  # the stream reader's limit; DATA's 1000 is content.py's

    def _init_ingress(self, options: SessionOptions, on_open: SessionCallback, on_close: SessionCallback) -> None:
        """The ingress' own per-connection state (aiosmtpd's is set by its constructor or a Blueprint)."""
        self._options = options
        self._policy = options.policy
        # aiosmtpd shares one dict between all connections and grows it on every EHLO
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit,
            AUTH=AUTH_LINE_LIMIT,
            MAIL=SMTP.command_size_limit + MAIL_DSN_LENGTH,
            RCPT=SMTP.command_size_limit + RCPT_DSN_LENGTH,
        )
        self._on_open = on_open
        self._on_close = on_close
        self._state = SessionState()
        self._timers = SessionTimers(self.loop)
        self._errors = limits.ErrorCounter(options.session_limits.max_errors)

    # -- connection life cycle -------------------------------------------------------------------

    def _create_session(self) -> Session:
        return IngressSession(self.loop, self._policy.kind)

    def _create_envelope(self) -> Envelope:
        return DsnEnvelope()  # each transaction's DSN parameters (RSET and EHLO start a new one)

    def ingress_session(self) -> IngressSession:
        """The current session (it exists from `connection_made` on; a method: aiosmtpd inspects properties)."""
        assert isinstance(self.session, IngressSession)
        return self.session

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_reader.adopt(reader)  # checked command lines, DATA in blocks (stream_reader.py)
        super()._cb_client_connected(reader, writer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handshake_done = self._original_transport is not None and self.transport is not None
        previous = self.session
        super().connection_made(transport)
        if handshake_done:
            assert isinstance(previous, IngressSession)
            session = self.ingress_session()
            session.peer = previous.peer
            session.socket_peer = previous.socket_peer
            session.proxy_data = previous.proxy_data
            self._state.tls = TlsPhase.ACTIVE
            metrics.TLS_HANDSHAKES.labels(result="success").inc()
            return
        session = self.ingress_session()
        session.socket_peer = session.peer
        if self._options.proxy.trusts(client_ip(session.peer)):
            self._state.proxy = ProxyIntake.HEADER_REQUIRED
        duration = self._options.session_limits.max_session_duration
        if duration is not None:
            reply = limits.SESSION_TOO_LONG.format(hostname=self.hostname)
            self._timers.start_session(duration, lambda: self._end_session(reply, Reason.TIMEOUT))
        if self._state.phase is Phase.CONNECTING:
            self._state.phase = Phase.OPENING
            self._on_open(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._finish()

    def data_received(self, data: bytes) -> None:
        if self._state.proxy is ProxyIntake.UNCHECKED:
            self._state.proxy = ProxyIntake.CHECKED
            if proxy.looks_like_v2_header(data):
                self._refuse_untrusted_proxy_header()
                self._end_session(replies.enhance(PROXY_NOT_RECOGNIZED), None)
                return
        if self._timers.data_running:
            self._reset_timeout()  # DATA: idle means no bytes at all; the DATA deadline bounds the rest
        super().data_received(data)

    def _finish(self) -> None:
        if self._state.phase is Phase.FINISHED:
            return
        self._state.phase = Phase.FINISHED
        self._timers.stop_all()
        if self._state.admitted is not None:
            self._options.connections.release(self._state.admitted)
            metrics.sessions_active(self._policy.kind.value).dec()
        self._on_close(self)

    def _refuse_untrusted_proxy_header(self) -> None:
        record_rejection(
            Reason.PROXY_PROTOCOL_ERROR,
            replies.enhance(PROXY_NOT_RECOGNIZED),
            client=client_address(self.session),
            helo=self._helo(),
            detail="PROXY header from an untrusted address",
        )

    # -- ending a session ------------------------------------------------------------------------

    def _end_session(self, reply: str | None, reason: Reason | None) -> None:
        """Send `reply` as the last word (when given), close, and stop reading commands."""
        state = self._state
        if state.closed:
            return
        if state.phase is Phase.QUEUEING:
            state.pending_end = state.pending_end or (reply or "", reason)
            return
        state.phase = Phase.CLOSING
        if reason is not None and reply:
            record_rejection(reason, reply, client=client_address(self.session), helo=self._helo())
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if reply and state.tls is not TlsPhase.HANDSHAKING:
                self._writer.write(reply.encode("ascii") + CRLF)
            transport.close()
            self.loop.call_later(ABORT_AFTER_SECONDS, self._abort, transport)
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def _close_silently(self) -> None:
        self._end_session(None, None)

    def _abort(self, transport: asyncio.BaseTransport) -> None:
        if self._state.phase is not Phase.FINISHED and isinstance(transport, asyncio.WriteTransport):
            transport.abort()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, restarted at every command (and by every DATA block): the deadline moves,
        and the timer armed for an earlier one stays and re-arms when it fires, instead of one timer made and
        cancelled per command."""
        now = self.loop.time()
        self._idle_deadline = deadline = now + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is not None and not handle.cancelled() and now < handle.when() <= deadline:
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() + CLOCK_RESOLUTION < self._idle_deadline:  # a command came meanwhile: on to its deadline
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)
            return
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        """The idle timer (aiosmtpd restarts it at every command)."""
        self._end_session(limits.TIMEOUT.format(hostname=self.hostname), Reason.TIMEOUT)

    def _data_timed_out(self) -> None:
        self._end_session(limits.DATA_TIMEOUT.format(hostname=self.hostname), Reason.TIMEOUT)

    def _helo(self) -> str | None:
        return self.session.host_name if self.session is not None else None

    # -- shutdown --------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """True from MAIL until the reply to DATA (or RSET)."""
        return self._state.in_data or (self.envelope is not None and bool(self.envelope.mail_from))

    def begin_drain(self) -> None:
        """Close now when idle, else when the current mail transaction ends."""
        self._state.draining = True
        self._close_if_draining()

    def close_now(self) -> None:
        """Close the connection with `421`, whatever it is doing (a message being queued gets its reply first)."""
        self._end_session(replies.SHUTTING_DOWN.format(hostname=self.hostname), None)

    def _close_if_draining(self) -> None:
        if self._state.draining and not self.in_transaction:
            self.close_now()
