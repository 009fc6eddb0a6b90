"""The SMTP listeners: aiosmtpd's protocol in the service's own event loop, one `SmtpServer` per listener.

`SmtpServer` runs one listener with `loop.create_server` (not aiosmtpd's threaded
Controller, which would put the broker channel on another loop; STYLE.md section 7).
Each connection is an `IngressSMTP` (the session package: state, limits, TLS, PROXY
protocol, commands). Implicit TLS is started by the session, after an optional PROXY
header, instead of by `create_server(ssl=...)`: a load balancer's PROXY header arrives in
clear text before the client's TLS ClientHello, and each handshake must use the current
certificate.

The listener's first connection is built by aiosmtpd's constructor, the later ones from
its `Blueprint` (session/aiosmtpd_contract.py), which skips aiosmtpd's per-connection
reflection.

On shutdown (`stop`) the listener stops accepting, lets mail transactions in progress
finish within the drain period and closes the rest with `421 4.3.2`.
"""

import asyncio
import logging

from kubemta_common.config_types import ListenAddress
from kubemta_ingress import metrics
from kubemta_ingress.interfaces import SmtpHandler
from kubemta_ingress.session import IngressSMTP, SessionOptions
from kubemta_ingress.session.aiosmtpd_contract import Blueprint
from kubemta_ingress.session.core import SessionCore

__all__ = ["CLOSE_WAIT_SECONDS", "IngressSMTP", "SessionOptions", "SmtpServer"]

logger = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 5.0


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
        self._sessions: set[SessionCore] = set()
        self._blueprint: Blueprint | None = None  # read in the serving loop from the first connection
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
        logger.info("SMTP listening on %s (%s)", self._listen, self.kind)

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
        logger.info("SMTP listener %s stopped", self.kind)

    def _new_session(self) -> IngressSMTP:
        metrics.SMTP_SESSIONS.inc()
        if self._blueprint is None:
            first = IngressSMTP(
                self._handler,
                hostname=self._hostname,
                data_size_limit=self._max_message_size,
                timeout=self._timeout,
                on_open=self._opened,
                on_close=self._closed,
                options=self._options,
            )
            self._blueprint = Blueprint.of(first)
            return first
        return IngressSMTP.from_blueprint(
            self._blueprint, options=self._options, on_open=self._opened, on_close=self._closed
        )

    def _opened(self, session: SessionCore) -> None:
        self._sessions.add(session)
        self._all_closed.clear()

    def _closed(self, session: SessionCore) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._all_closed.set()
