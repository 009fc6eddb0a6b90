"""TLS under a session, STARTTLS (RFC 3207) and implicit (the SMTPS listener), with the current certificate.

Each handshake uses the certificate current at that moment (tls.py). Whatever a client
pipelined after STARTTLS is discarded, in clear text and after the handshake (RFC 3207
section 4.2; the CVE-2011-0411 command injection); bytes read before an implicit TLS
handshake (a ClientHello right behind a PROXY header) are handed to the TLS layer.
STARTTLS inside TLS is refused with `503 5.5.1`.
"""

import asyncio
import asyncio.sslproto as sslproto
import logging
import math
import ssl

from aiosmtpd.smtp import TLSSetupException, syntax

from kubemta_ingress import metrics
from kubemta_ingress.proxy import client_address
from kubemta_ingress.session.aiosmtpd_contract import buffered
from kubemta_ingress.session.core import SessionCore
from kubemta_ingress.session.state import TlsPhase

logger = logging.getLogger(__name__)

STARTTLS_READY = "220 2.0.0 Ready to start TLS"  # RFC 3207 section 4
TLS_ALREADY_ACTIVE = "503 5.5.1 Error: TLS already active"  # RFC 3207 section 4.2: STARTTLS once only
TLS_NOT_AVAILABLE = "454 4.7.0 TLS not available due to local problem"  # RFC 3207 section 4


class TlsStart(SessionCore):
    """Starting TLS on a session."""

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

    async def _start_tls(self, context: ssl.SSLContext, *, keep_buffered: bool) -> None:
        """Put TLS under the session (as aiosmtpd's smtp_STARTTLS does); raises TLSSetupException on failure.

        Bytes already read in clear text are handed to the TLS layer for implicit TLS
        (a ClientHello right behind a PROXY header) and discarded after STARTTLS.
        """
        pending = buffered(self._reader)
        early = bytes(pending)
        pending.clear()
        if early and not keep_buffered:
            logger.info(
                "discarded %d bytes pipelined after STARTTLS",
                len(early),
                extra={"client": client_address(self.session)},
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
        self._state.tls = TlsPhase.HANDSHAKING
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
            if self._state.tls is TlsPhase.HANDSHAKING:
                self._state.tls = TlsPhase.PLAIN
        if self._state.tls is not TlsPhase.ACTIVE:  # connection_made, after the handshake, sets it
            metrics.TLS_HANDSHAKES.labels(result="failure").inc()
            raise TLSSetupException("connection closed during the TLS handshake")

    def _tls_failed(self, error: TLSSetupException) -> None:
        logger.info(
            "TLS handshake failed: %s",
            error.__cause__ or error,
            extra={"client": client_address(self.session)},
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
