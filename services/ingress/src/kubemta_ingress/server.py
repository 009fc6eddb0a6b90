"""The SMTP listeners: aiosmtpd's protocol in the service's own event loop, with its policies and bounds.

`IngressSMTP` adapts aiosmtpd's `SMTP`, each adaptation in one place:
- every reply passes through `push`, which adds the RFC 3463 enhanced status code
  (replies.enhance), counts aiosmtpd's own refusals as rejections, counts 5xx
  replies against the error limit and closes after any `421` (RFC 5321 section 3.8);
  replies to HELO/EHLO stay verbatim (RFC 2034 section 3);
- each connection gets its own command size limits (aiosmtpd shares one dict
  between all connections and grows it on every EHLO);
- the session opens in `_open`: PROXY header from a trusted proxy (proxy.py),
  connection limits (limits.py), implicit TLS on the SMTPS listener, then the greeting;
- TLS (STARTTLS and implicit) uses the certificate current at the handshake
  (tls.py). Whatever a client pipelined after STARTTLS is discarded, in clear text
  and after the handshake (RFC 3207 section 4.2; the CVE-2011-0411 command
  injection), and STARTTLS inside TLS is refused with `503 5.5.1`. The session that
  aiosmtpd builds anew after the handshake keeps the client address and listener;
- timers bound a session (limits.py): idle time between commands, the DATA phase,
  the whole session; each ends with `421 4.4.2` and close. A session that is queueing
  a message finishes that first, so a client never loses a `250` it was owed;
- on shutdown an idle session is closed with `421 4.3.2` (RFC 5321 section 3.8) at
  once, a session in a mail transaction when that transaction ends.

Once a session's last reply is written nothing more is read or answered: the
handler task is cancelled, so pipelined commands behind a `421` never run.

`SmtpServer` runs one listener with `loop.create_server` (not aiosmtpd's threaded
Controller, which would put the broker channel on another loop; STYLE.md section 7).
Implicit TLS is started by the protocol, after an optional PROXY header, instead of
by `create_server(ssl=...)`: a load balancer's PROXY header arrives in clear text
before the client's TLS ClientHello, and each handshake must use the current
certificate.
"""

import asyncio
import asyncio.sslproto as sslproto
import collections
import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthenticatorType, Session, TLSSetupException, syntax

from kubemta_common.config_types import ListenAddress
from kubemta_ingress import limits, metrics, proxy, replies, stream_reader
from kubemta_ingress.content import BadCommandLine, unstuff
from kubemta_ingress.data_budget import INSUFFICIENT_STORAGE, DataBudget, Reservation, declared_size
from kubemta_ingress.handler import text_field
from kubemta_ingress.interfaces import SmtpHandler
from kubemta_ingress.listeners import MX, POLICY_REFUSALS, IngressSession, ListenerPolicy
from kubemta_ingress.policy import client_ip
from kubemta_ingress.proxy import ProxyTrust, client_address
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.smtp_paths import plain_path
from kubemta_ingress.tls import TlsContextStore

logger = logging.getLogger(__name__)

IDENT = "ESMTP kubemta"
CRLF = b"\r\n"
CLOSE_WAIT_SECONDS = 5.0
ABORT_AFTER_SECONDS = 5.0  # a client that stops reading cannot keep a closing connection open

STARTTLS_READY = "220 2.0.0 Ready to start TLS"  # RFC 3207 section 4
TLS_ALREADY_ACTIVE = "503 5.5.1 Error: TLS already active"  # RFC 3207 section 4.2: STARTTLS once only
TLS_NOT_AVAILABLE = "454 4.7.0 TLS not available due to local problem"  # RFC 3207 section 4
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"  # Postfix' wording
PROXY_NOT_RECOGNIZED = '500 Error: command "PROXY" not recognized'  # as any unknown command (aiosmtpd's text)
TOO_MUCH_DATA = "552 Error: Too much mail data"  # aiosmtpd's text; replies.enhance adds 5.3.4
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")  # RFC 2047 section 2
PROXY_HEADER_REFUSED = "connection closed: missing, invalid or late PROXY protocol header"


@dataclass(frozen=True)
class SessionOptions:
    """What a listener's sessions share: its policy and the process-wide TLS, AUTH, PROXY and limits."""

    policy: ListenerPolicy = MX
    tls: TlsContextStore | None = None
    authenticator: AuthenticatorType | None = None
    proxy: ProxyTrust = field(default_factory=ProxyTrust)
    session_limits: limits.SessionLimits = field(default_factory=limits.SessionLimits)
    connections: limits.ConnectionLimiter = field(default_factory=limits.unlimited)
    data_budget: DataBudget | None = None


class IngressSMTP(SMTP):
    """One SMTP connection."""

    # AUTH LOGIN prompts as other servers send them (`334 VXNlcm5hbWU6`, `334 UGFzc3dvcmQ6`); clients that
    # match the prompt text expect these, not aiosmtpd's "User Name\0" and "Password\0".
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        hostname: str,
        data_size_limit: int,
        timeout: float,
        on_open: Callable[["IngressSMTP"], None],
        on_close: Callable[["IngressSMTP"], None],
        options: SessionOptions | None = None,
    ) -> None:
        self._options = options or SessionOptions()
        self._policy = self._options.policy
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        tls = self._options.tls
        super().__init__(
            handler,
            hostname=hostname,
            ident=IDENT,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
            tls_context=tls.current if tls is not None and not self._policy.implicit_tls else None,
            require_starttls=self._policy.require_starttls,
            auth_required=self._policy.auth_required,
            auth_require_tls=True,
            authenticator=self._options.authenticator,
            loop=asyncio.get_running_loop(),
        )
        self._init_connection_state(on_open, on_close)

    @classmethod
    def like(cls, template: "IngressSMTP") -> "IngressSMTP":
        """A new connection configured as `template`, without aiosmtpd's per-connection reflection.

        aiosmtpd's constructor finds the command, hook and AUTH methods with
        `inspect.getmembers` and `dir` on every connection (~14% of the ingress' CPU time
        under load). The answer is the same for every connection of a listener, so it is
        computed once for a template and copied: the methods are bound anew to this
        connection, and the state that belongs to one connection (the stream protocol's
        reader, futures and buffers, the command limits, the timers, the counters) is
        created fresh. `test_ingress_session_clone.py` fails when aiosmtpd's constructor
        starts setting something this copy does not handle.
        """
        connection = cls.__new__(cls)
        connection.__dict__.update(template.__dict__)
        asyncio.StreamReaderProtocol.__init__(
            connection,
            asyncio.StreamReader(limit=cls.line_length_limit, loop=template.loop),
            client_connected_cb=connection._cb_client_connected,
            loop=template.loop,
        )
        connection._smtp_methods = {name: getattr(connection, f"smtp_{name}") for name in template._smtp_methods}
        connection._auth_methods = {
            name: mechanism._replace(method=getattr(connection, mechanism.method.__name__))
            if mechanism.is_builtin
            else mechanism
            for name, mechanism in template._auth_methods.items()
        }
        connection.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        tls = connection._options.tls
        if tls is not None and not connection._policy.implicit_tls:
            connection.tls_context = tls.current
        connection._init_connection_state(template._on_open, template._on_close)
        return connection

    def _init_connection_state(
        self, on_open: Callable[["IngressSMTP"], None], on_close: Callable[["IngressSMTP"], None]
    ) -> None:
        self._on_open = on_open
        self._on_close = on_close
        self._opened = False
        self._finished = False
        self._verbatim = False
        self._in_data = False
        self._draining = False
        self._closing = False
        self._queueing = False
        self._pending_end: tuple[str, Reason | None] | None = None
        self._handshaking = False
        self._tls_established = False
        self._trusted_proxy = False
        self._first_data = True
        self._admitted: str | None = None
        self._errors = limits.ErrorCounter(self._options.session_limits.max_errors)
        self._data_deadline: asyncio.TimerHandle | None = None
        self._session_deadline: asyncio.TimerHandle | None = None

    # -- connection life cycle -------------------------------------------------------------------

    def _create_session(self) -> Session:
        return IngressSession(self.loop, self._policy.kind)

    def ingress_session(self) -> IngressSession:
        """The current session (it exists from `connection_made` on; a method: aiosmtpd inspects properties)."""
        assert isinstance(self.session, IngressSession)
        return self.session

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_reader.adopt(reader)  # checked command lines, DATA in blocks (stream_reader.py)
        super()._cb_client_connected(reader, writer)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BadCommandLine):
            logger.info(
                "refused a command line: %s", error, extra={"queue_id": None, "client": client_address(self.session)}
            )
            return replies.BARE_LINE_ENDING_COMMAND
        status: str = await super().handle_exception(error)
        return status

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = plain_path(arg)
        limit = self.local_part_limit
        if plain is not None and not (limit and len(plain[0].rpartition("@")[0]) > limit):
            return plain
        try:
            address, rest = super()._getaddr(arg)
        except (IndexError, ValueError):  # email's header parser fails so on input such as a lone '"'
            return None, None  # "malformed address", a 501 (replies._REWRITES)
        if address is not None and any(word not in address for word in ENCODED_WORD.findall(arg)):
            # email's header parser decodes RFC 2047 encoded words, even quoted: <"=?utf-8?b?Ym9i?="@x> would be
            # judged and queued as bob@x. An envelope address is never decoded (RFC 5321 knows no encoded words),
            # and nothing is rewritten: one the parser decoded is refused as malformed.
            return None, None
        return address, rest

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handshake_done = self._original_transport is not None and self.transport is not None
        previous = self.session
        super().connection_made(transport)
        if handshake_done:
            # aiosmtpd starts a new Session after the TLS handshake (RFC 3207 section 4.2 forgets
            # what the client said, not who it is): keep the client address and the listener.
            assert isinstance(previous, IngressSession)
            session = self.ingress_session()
            session.peer = previous.peer
            session.socket_peer = previous.socket_peer
            session.proxy_data = previous.proxy_data
            self._tls_established = True
            metrics.TLS_HANDSHAKES.labels(result="success").inc()
            return
        session = self.ingress_session()
        session.socket_peer = session.peer
        self._trusted_proxy = self._options.proxy.trusts(client_ip(session.peer))
        duration = self._options.session_limits.max_session_duration
        if duration is not None:
            reply = limits.SESSION_TOO_LONG.format(hostname=self.hostname)
            self._session_deadline = self.loop.call_later(duration, self._end_session, reply, Reason.TIMEOUT)
        if not self._opened:
            self._opened = True
            self._on_open(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._finish()

    def data_received(self, data: bytes) -> None:
        if self._first_data:
            self._first_data = False
            if not self._trusted_proxy and proxy.looks_like_v2_header(data):
                self._refuse_untrusted_proxy_header()
                self._end_session(replies.enhance(PROXY_NOT_RECOGNIZED), None)
                return
        if self._data_deadline is not None:
            self._reset_timeout()  # DATA: idle means no bytes at all; the DATA deadline bounds the rest
        super().data_received(data)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        for handle in (self._session_deadline, self._data_deadline):
            if handle is not None:
                handle.cancel()
        if self._admitted is not None:
            self._options.connections.release(self._admitted)
            metrics.SMTP_SESSIONS_ACTIVE.labels(listener=self._policy.kind.value).dec()
        self._on_close(self)

    async def _handle_client(self) -> None:
        if await self._open():
            await super()._handle_client()

    async def _open(self) -> bool:
        """PROXY header, connection limits, implicit TLS; False when the connection was closed instead."""
        session = self.ingress_session()
        if self._trusted_proxy:
            header = await proxy.read_header(self._reader, self._options.proxy.timeout)
            if header is None:
                metrics.SMTP_CONNECTIONS_REFUSED.labels(reason=limits.Refusal.PROXY_PROTOCOL.value).inc()
                record_rejection(
                    Reason.PROXY_PROTOCOL_ERROR, PROXY_HEADER_REFUSED, client=client_address(session), helo=None
                )
                self._close_silently()
                return False
            session.proxy_data = header
            real_peer = proxy.proxied_peer(header)
            if real_peer is not None:
                session.peer = real_peer  # type: ignore[assignment]  # aiosmtpd annotates str, stores peername
            logger.info(
                "PROXY header accepted",
                extra={"queue_id": None, "client": client_address(session), "proxy": str(session.socket_peer)},
            )
        client = client_address(session)
        refusal = self._options.connections.acquire(client)
        if refusal is not None:
            self._refuse_connection(refusal, client)
            return False
        self._admitted = client
        metrics.SMTP_SESSIONS_ACTIVE.labels(listener=self._policy.kind.value).inc()
        if self._policy.implicit_tls:
            assert self._options.tls is not None, "the SMTPS listener needs a certificate"
            try:
                await self._start_tls(self._options.tls.current, keep_buffered=True)
            except TLSSetupException as exc:
                self._tls_failed(exc)
                return False
        return True

    def _refuse_connection(self, refusal: limits.Refusal, client: str) -> None:
        metrics.SMTP_CONNECTIONS_REFUSED.labels(reason=refusal.value).inc()
        if refusal is limits.Refusal.MAX_CONNECTIONS:
            reply = limits.TOO_MANY_CONNECTIONS.format(hostname=self.hostname)
        else:
            reply = limits.TOO_MANY_CONNECTIONS_FROM.format(hostname=self.hostname, client=client)
        record_rejection(Reason.TOO_MANY_CONNECTIONS, reply, client=client, helo=None, listener=self._policy.kind.value)
        if self._policy.implicit_tls:
            # No clear-text reply to a TLS client, and no handshake spent on a client we refuse.
            self._close_silently()
        else:
            self._end_session(reply, None)

    def _refuse_untrusted_proxy_header(self) -> None:
        record_rejection(
            Reason.PROXY_PROTOCOL_ERROR,
            replies.enhance(PROXY_NOT_RECOGNIZED),
            client=client_address(self.session),
            helo=self.session.host_name if self.session is not None else None,
            detail="PROXY header from an untrusted address",
        )

    # -- ending a session ------------------------------------------------------------------------

    def _end_session(self, reply: str | None, reason: Reason | None) -> None:
        """Send `reply` as the last word (when given), close, and stop reading commands."""
        if self._closing:
            return
        if self._queueing:
            self._pending_end = self._pending_end or (reply or "", reason)
            return
        self._closing = True
        if reason is not None and reply:
            record_rejection(reason, reply, client=client_address(self.session), helo=self._helo())
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if reply and not self._handshaking:
                self._writer.write(reply.encode("ascii") + CRLF)
            transport.close()
            self.loop.call_later(ABORT_AFTER_SECONDS, self._abort, transport)
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def _close_silently(self) -> None:
        self._end_session(None, None)

    def _abort(self, transport: asyncio.BaseTransport) -> None:
        if not self._finished and isinstance(transport, asyncio.WriteTransport):
            transport.abort()

    def _timeout_cb(self) -> None:
        """The idle timer (aiosmtpd restarts it at every command)."""
        self._end_session(limits.TIMEOUT.format(hostname=self.hostname), Reason.TIMEOUT)

    def _data_timed_out(self) -> None:
        self._data_deadline = None
        self._end_session(limits.DATA_TIMEOUT.format(hostname=self.hostname), Reason.TIMEOUT)

    def _cancel_data_deadline(self) -> None:
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None

    def _helo(self) -> str | None:
        return self.session.host_name if self.session is not None else None

    # -- replies ---------------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        if self._closing:
            return  # the session's last word is said
        if isinstance(status, bytes):
            await super().push(status)
            return
        if self._verbatim:
            reply = status
        else:
            reply = replies.enhance(status)
            self._record_builtin_rejection(status, reply)
        await super().push(reply)
        if reply.startswith("354") and self._options.session_limits.data_timeout is not None:
            self._data_deadline = self.loop.call_later(self._options.session_limits.data_timeout, self._data_timed_out)
        if reply.startswith("421 "):
            self._close_silently()  # RFC 5321 section 3.8: 421 closes the channel
            return
        if self._errors.record(reply):
            self._end_session(limits.TOO_MANY_ERRORS.format(hostname=self.hostname), Reason.TOO_MANY_ERRORS)
            return
        if reply[3:4] == " ":
            self._close_if_draining()

    def _record_builtin_rejection(self, status: str, reply: str) -> None:
        reason = replies.builtin_rejection(status) or POLICY_REFUSALS.get(status)
        if reason is None:
            return
        sender = text_field(self.envelope.mail_from) if self.envelope is not None else ""
        record_rejection(
            reason,
            reply,
            client=client_address(self.session),
            helo=self._helo(),
            sender=sender,
            listener=self._policy.kind.value,
        )

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if self._closing:
            await asyncio.sleep(0)  # the handler task is cancelled: this raises CancelledError
            raise asyncio.CancelledError
        if command == "EHLO" and self._options.authenticator is None:
            hostname, responses = args
            args = (hostname, [line for line in responses if not line[4:].upper().startswith("AUTH")])
        budget = self._options.data_budget
        if command == "MAIL" and budget is not None:
            _, mail_options = args
            if budget.available <= 0 or declared_size(mail_options) > budget.available:
                self._record_budget_refusal()
                return INSUFFICIENT_STORAGE  # no room now: the client tries again later
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        self._cancel_data_deadline()  # the message is complete
        self._queueing = True  # cleared when the reply to DATA is sent (smtp_DATA)
        status = await super()._call_handler_hook(command, *args)
        if isinstance(status, str) and status.startswith("250"):
            self._errors.reset()
        return status

    # -- commands --------------------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self._verbatim_command(super().smtp_HELO, hostname)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._verbatim_command(super().smtp_EHLO, hostname)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._in_data = True
        try:
            await self._receive_message(arg)
        finally:
            self._in_data = False
            self._queueing = False
            self._cancel_data_deadline()
        if self._pending_end is not None:
            reply, reason = self._pending_end
            self._pending_end = None
            self._end_session(reply or None, reason)
            return
        self._close_if_draining()

    async def _receive_message(self, arg: str) -> None:
        """aiosmtpd's DATA command with the data read in blocks (stream_reader.py) instead of line by line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        assert isinstance(reader, stream_reader.SmtpStreamReader)
        budget = self._options.data_budget
        reservation = budget.reservation() if budget is not None else None
        try:
            await self._read_and_queue(reader, reservation)
        finally:
            if reservation is not None:  # the data is queued or refused: its bytes are free again
                reservation.release()

    async def _read_and_queue(self, reader: stream_reader.SmtpStreamReader, reservation: Reservation | None) -> None:
        assert self.envelope is not None
        try:
            data = await reader.read_message_data(self.data_size_limit, reservation)
        except asyncio.IncompleteReadError:
            self._writer.close()
            return
        if isinstance(data, stream_reader.DataRefusal):
            if data is stream_reader.DataRefusal.OVER_BUDGET:
                self._record_budget_refusal()
                await self.push(INSUFFICIENT_STORAGE)
            else:
                await self.push(TOO_MUCH_DATA)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        content = unstuff(data)
        del data
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)

    def _record_budget_refusal(self) -> None:
        sender = text_field(self.envelope.mail_from) if self.envelope is not None else ""
        record_rejection(
            Reason.INSUFFICIENT_STORAGE,
            INSUFFICIENT_STORAGE,
            client=client_address(self.session),
            helo=self._helo(),
            sender=sender,
            listener=self._policy.kind.value,
        )

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if self._tls_protocol is not None:
            await self.push(TLS_ALREADY_ACTIVE)
            return
        if self._options.tls is None:
            await self.push(TLS_NOT_AVAILABLE)
            return
        self.tls_context = self._options.tls.current
        await self.push(STARTTLS_READY)
        try:
            await self._start_tls(self.tls_context, keep_buffered=False)
        except TLSSetupException as exc:
            self._tls_failed(exc)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._options.authenticator is None:
            await self.push(AUTH_NOT_ENABLED)
            return
        await super().smtp_AUTH(arg)

    async def smtp_PROXY(self, arg: str) -> None:
        """A PROXY header where none may be (not listed in HELP): refused as an unknown command."""
        self._refuse_untrusted_proxy_header()
        await self.push(PROXY_NOT_RECOGNIZED)

    async def _verbatim_command(self, command: Callable[[str], Awaitable[object]], arg: str) -> None:
        self._verbatim = True
        try:
            await command(arg)
        finally:
            self._verbatim = False
        self._close_if_draining()

    # -- TLS -------------------------------------------------------------------------------------

    async def _start_tls(self, context: ssl.SSLContext, *, keep_buffered: bool) -> None:
        """Put TLS under the session (as aiosmtpd's smtp_STARTTLS does); raises TLSSetupException on failure.

        Bytes already read in clear text are handed to the TLS layer for implicit TLS
        (a ClientHello right behind a PROXY header) and discarded after STARTTLS.
        """
        buffered: bytearray = self._reader._buffer  # type: ignore[attr-defined]
        early = bytes(buffered)
        buffered.clear()
        if early and not keep_buffered:
            logger.info(
                "discarded %d bytes pipelined after STARTTLS",
                len(early),
                extra={"queue_id": None, "client": client_address(self.session)},
            )
            early = b""
        waiter: asyncio.Future[None] = self.loop.create_future()
        tls = sslproto.SSLProtocol(
            self.loop, self, context, waiter, server_side=True, ssl_handshake_timeout=math.ceil(self._timeout_duration)
        )
        original = self.transport
        assert original is not None
        self._tls_protocol = tls
        self._original_transport = original
        original.set_protocol(tls)
        self.transport = tls._app_transport
        self._handshaking = True
        try:
            tls.connection_made(original)
            self._feed_tls(tls, early)
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.TLS_HANDSHAKES.labels(result="failure").inc()
            raise TLSSetupException() from exc
        finally:
            self._handshaking = False
        if not self._tls_established:
            metrics.TLS_HANDSHAKES.labels(result="failure").inc()
            raise TLSSetupException("connection closed during the TLS handshake")

    def _tls_failed(self, error: TLSSetupException) -> None:
        logger.info(
            "TLS handshake failed: %s",
            error.__cause__ or error,
            extra={"queue_id": None, "client": client_address(self.session)},
        )
        self._close_silently()
        self.connection_lost(None)  # the TLS layer never calls it before its handshake finished

    @staticmethod
    def _feed_tls(tls: sslproto.SSLProtocol, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buffer = tls.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            tls.buffer_updated(size)
            view = view[size:]

    # -- shutdown --------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """True from MAIL until the reply to DATA (or RSET)."""
        return self._in_data or (self.envelope is not None and bool(self.envelope.mail_from))

    def begin_drain(self) -> None:
        """Close now when idle, else when the current mail transaction ends."""
        self._draining = True
        self._close_if_draining()

    def close_now(self) -> None:
        """Close the connection with `421`, whatever it is doing (a message being queued gets its reply first)."""
        self._end_session(replies.SHUTTING_DOWN.format(hostname=self.hostname), None)

    def _close_if_draining(self) -> None:
        if self._draining and not self.in_transaction:
            self.close_now()


class SmtpServer:
    """One SMTP listener and the set of its open sessions."""

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        listen: ListenAddress,
        hostname: str,
        max_message_size: int,
        timeout: float,
        options: SessionOptions | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._handler = handler
        self._reuse_port = reuse_port
        self._listen = listen
        self._hostname = hostname
        self._max_message_size = max_message_size
        self._timeout = timeout
        self._options = options or SessionOptions()
        self._server: asyncio.Server | None = None
        self._sessions: set[IngressSMTP] = set()
        self._template: IngressSMTP | None = None  # built in the serving loop by the first connection
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def session_count(self) -> int:
        """Open SMTP connections."""
        return len(self._sessions)

    @property
    def kind(self) -> str:
        """The listener's name (smtp, submission, smtps)."""
        return self._options.policy.kind.value

    async def start(self) -> None:
        """Bind and start accepting connections; raises OSError when the address cannot be bound."""
        # aiosmtpd logs every command line at INFO (and PROXY details at mail.debug); the ingress logs its own events.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        logging.getLogger("mail.debug").setLevel(logging.ERROR)
        metrics.SMTP_SESSIONS_ACTIVE.labels(listener=self.kind)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_session, self._listen.host, self._listen.port, reuse_port=self._reuse_port or None
        )
        logger.info("SMTP listening on %s (%s)", self._listen, self.kind, extra={"queue_id": None})

    async def stop(self, drain_seconds: float, *, close_wait: float = CLOSE_WAIT_SECONDS) -> None:
        """Stop accepting, let transactions in progress finish within `drain_seconds`, close the rest.

        A session queueing a message when the drain ends gets its reply first (it closes after it), so
        `close_wait` must cover the publish timeout: then no client is left without the answer it is owed.
        """
        if self._server is None:
            return
        self._server.close()
        for session in list(self._sessions):
            session.begin_drain()
        try:
            async with asyncio.timeout(drain_seconds):
                await self._all_closed.wait()
        except TimeoutError:
            logger.warning("closing %d SMTP sessions after the drain period", len(self._sessions))
            for session in list(self._sessions):
                session.close_now()
        try:
            async with asyncio.timeout(max(close_wait, CLOSE_WAIT_SECONDS)):
                await self._server.wait_closed()
        except TimeoutError:
            logger.warning("SMTP connections still closing")
        logger.info("SMTP listener %s stopped", self.kind, extra={"queue_id": None})

    def _new_session(self) -> IngressSMTP:
        metrics.SMTP_SESSIONS.inc()
        if self._template is None:
            self._template = self._build_session()
        return IngressSMTP.like(self._template)

    def _build_session(self) -> IngressSMTP:
        return IngressSMTP(
            self._handler,
            hostname=self._hostname,
            data_size_limit=self._max_message_size,
            timeout=self._timeout,
            on_open=self._opened,
            on_close=self._closed,
            options=self._options,
        )

    def _opened(self, session: IngressSMTP) -> None:
        self._sessions.add(session)
        self._all_closed.clear()

    def _closed(self, session: IngressSMTP) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._all_closed.set()
