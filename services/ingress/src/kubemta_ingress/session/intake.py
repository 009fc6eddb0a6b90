"""The session's opening, before the greeting: PROXY header, connection limits, implicit TLS.

- A trusted proxy (proxy.py) must send a PROXY header first; the client it names
  becomes the session's peer. A missing, invalid or late header closes the connection.
- The connection limits (limits.py) admit the client or refuse it with `421` (in
  silence on the SMTPS listener: no clear-text reply to a TLS client, and no handshake
  spent on a client that is refused).
- On the SMTPS listener TLS starts here (tls_start.py), with the current certificate:
  a load balancer's PROXY header arrives in clear text before the client's ClientHello.
"""

import logging

from aiosmtpd.smtp import TLSSetupException

from kubemta_ingress import limits, metrics, proxy
from kubemta_ingress.proxy import client_address
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.session.state import Phase, ProxyIntake
from kubemta_ingress.session.tls_start import TlsStart

logger = logging.getLogger(__name__)

PROXY_HEADER_REFUSED = "connection closed: missing, invalid or late PROXY protocol header"


class Intake(TlsStart):
    """Opening a session: PROXY header, limits, implicit TLS."""

    async def _handle_client(self) -> None:
        if await self._open():
            self._state.enter(Phase.COMMANDS)
            await super()._handle_client()

    async def _open(self) -> bool:
        """PROXY header, connection limits, implicit TLS; False when the connection was closed instead."""
        session = self.ingress_session()
        if self._state.proxy is ProxyIntake.HEADER_REQUIRED:
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
                extra={"client": client_address(session), "proxy": str(session.socket_peer)},
            )
        client = client_address(session)
        refusal = self._options.connections.acquire(client)
        if refusal is not None:
            self._refuse_connection(refusal, client)
            return False
        self._state.admitted = client
        metrics.sessions_active(self._policy.kind.value).inc()
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
            self._close_silently()
        else:
            self._end_session(reply, None)
