"""The SMTP listener: aiosmtpd's protocol in the service's own event loop, and its shutdown.

`IngressSMTP` adapts aiosmtpd's `SMTP` in three ways, each in one place:
- every reply passes through `push`, which adds the RFC 3463 enhanced status code
  (replies.enhance) and counts aiosmtpd's own message refusals (size, line length,
  malformed address) as rejections; replies to HELO/EHLO stay verbatim (RFC 2034 section 3);
- each connection gets its own command size limits (aiosmtpd shares one dict
  between all connections and grows it on every EHLO);
- on shutdown an idle session is closed with `421 4.3.2` (RFC 5321 section 3.8) at
  once, a session in a mail transaction when that transaction ends.

`SmtpServer` runs it with `loop.create_server` (not aiosmtpd's threaded Controller,
which would put the broker channel on another loop; STYLE.md section 7).
"""

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

from aiosmtpd.smtp import SMTP, syntax

from kubemta_common.config_types import ListenAddress
from kubemta_ingress import metrics, replies
from kubemta_ingress.handler import client_label, text_field
from kubemta_ingress.interfaces import SmtpHandler
from kubemta_ingress.rejections import record_rejection

logger = logging.getLogger(__name__)

IDENT = "ESMTP kubemta"
CRLF = b"\r\n"
CLOSE_WAIT_SECONDS = 5.0


class IngressSMTP(SMTP):
    """One SMTP connection."""

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        hostname: str,
        data_size_limit: int,
        timeout: float,
        on_open: Callable[["IngressSMTP"], None],
        on_close: Callable[["IngressSMTP"], None],
    ) -> None:
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            handler,
            hostname=hostname,
            ident=IDENT,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
            loop=asyncio.get_running_loop(),
        )
        self._on_open = on_open
        self._on_close = on_close
        self._opened = False
        self._verbatim = False
        self._in_data = False
        self._draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._opened:
            self._opened = True
            self._on_open(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._on_close(self)

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, bytes):
            await super().push(status)
            return
        if self._verbatim:
            await super().push(status)
            return
        reply = replies.enhance(status)
        reason = replies.builtin_rejection(status)
        if reason is not None:
            assert self.session is not None
            sender = text_field(self.envelope.mail_from) if self.envelope is not None else ""
            record_rejection(
                reason, reply, client=client_label(self.session), helo=self.session.host_name, sender=sender
            )
        await super().push(reply)
        if reply[3:4] == " ":
            self._close_if_draining()

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
            await super().smtp_DATA(arg)
        finally:
            self._in_data = False
        self._close_if_draining()

    async def _verbatim_command(self, command: Callable[[str], Awaitable[object]], arg: str) -> None:
        self._verbatim = True
        try:
            await command(arg)
        finally:
            self._verbatim = False
        self._close_if_draining()

    @property
    def in_transaction(self) -> bool:
        """True from MAIL until the reply to DATA (or RSET)."""
        return self._in_data or (self.envelope is not None and bool(self.envelope.mail_from))

    def begin_drain(self) -> None:
        """Close now when idle, else when the current mail transaction ends."""
        self._draining = True
        self._close_if_draining()

    def close_now(self) -> None:
        """Close the connection with `421`, whatever it is doing."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(replies.SHUTTING_DOWN.format(hostname=self.hostname).encode("ascii") + CRLF)
            self.transport.close()

    def _close_if_draining(self) -> None:
        if self._draining and not self.in_transaction:
            self.close_now()


class SmtpServer:
    """The SMTP listener and the set of open sessions."""

    def __init__(
        self, handler: SmtpHandler, *, listen: ListenAddress, hostname: str, max_message_size: int, timeout: float
    ) -> None:
        self._handler = handler
        self._listen = listen
        self._hostname = hostname
        self._max_message_size = max_message_size
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._sessions: set[IngressSMTP] = set()
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

    async def start(self) -> None:
        """Bind and start accepting connections; raises OSError when the address cannot be bound."""
        # aiosmtpd logs every command line at INFO; the ingress logs its own events.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, self._listen.host, self._listen.port)
        logger.info("SMTP listening on %s", self._listen, extra={"queue_id": None})

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting, let transactions in progress finish within `drain_seconds`, close the rest."""
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
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await self._server.wait_closed()
        except TimeoutError:
            logger.warning("SMTP connections still closing")
        logger.info("SMTP listener stopped", extra={"queue_id": None})

    def _new_session(self) -> IngressSMTP:
        metrics.SMTP_SESSIONS.inc()
        return IngressSMTP(
            self._handler,
            hostname=self._hostname,
            data_size_limit=self._max_message_size,
            timeout=self._timeout,
            on_open=self._opened,
            on_close=self._closed,
        )

    def _opened(self, session: IngressSMTP) -> None:
        self._sessions.add(session)
        self._all_closed.clear()

    def _closed(self, session: IngressSMTP) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._all_closed.set()
