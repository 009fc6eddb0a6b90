"""A scripted LMTP mailbox server for tests (RFC 2033): aiosmtpd's LMTP class on a loopback address or a
unix socket, run in the test's own event loop, answering RCPT from a list of users.

    peer = LmtpPeer("127.0.3.9", users={"alice"})
    await peer.start()                 # peer.port now holds the bound port
    ...                                # RCPT TO:<alice@any.domain> -> 250, anyone else -> 550 5.1.1
    await peer.stop()

- `users`: local parts that exist (compared as sent); others get Dovecot's reply
  `550 5.1.1 <addr> User doesn't exist: addr`. `rules` overrides the reply for a local part.
- `gate`: while it is clear, RCPT replies wait (for tests of concurrency); `set()` lets them go.
- `silent`: accept connections and never greet (for timeouts); `greeting`: greet with this
  line instead and ignore everything (e.g. `554 5.3.2 go away`).
- `smtputf8`: offer SMTPUTF8 in the LHLO reply (default yes).
- `dsn`: offer DSN (RFC 3461) in the LHLO reply and take its parameters (default no; as
  smtp_peer.ScriptedPeer's `dsn`).

Records: `connections` (connections accepted), `rcpt_args` (RCPT command arguments as they
arrived, before aiosmtpd's parser, which decodes RFC 2047 encoded words), `rcpts` (RCPT
addresses as parsed, in order, of those that reached the handler),
`mail_params` (MAIL FROM lines' parameters, upper-cased by aiosmtpd, without the DSN ones),
`mail_args` (MAIL arguments as they arrived), `helos` (LHLO arguments), `in_rcpt` (RCPTs
waiting at the gate now) and `max_in_rcpt` (its peak), `messages` (DATA received: never,
for probes; each is answered with one reply per accepted recipient, RFC 2033 §4.2).
"""

import asyncio
from pathlib import Path
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.harness.smtp_peer import DsnCommands

USER_UNKNOWN = "550 5.1.1 <{address}> User doesn't exist: {address}"  # Dovecot 2.3's reply
USER_OK = "250 2.1.5 OK"


class _Handler:
    def __init__(self, peer: "LmtpPeer") -> None:
        self._peer = peer

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name (LHLO goes through it)
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self._peer.helos.append(hostname)
        session.host_name = hostname
        if self._peer.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        self._peer.mail_params.append(list(mail_options))
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        peer = self._peer
        peer.rcpts.append(address)
        peer.in_rcpt += 1
        peer.max_in_rcpt = max(peer.max_in_rcpt, peer.in_rcpt)
        try:
            await peer.gate.wait()
        finally:
            peer.in_rcpt -= 1
        local = address.rpartition("@")[0]
        if local in peer.rules:
            return peer.rules[local]
        if local in peer.users:
            envelope.rcpt_tos.append(address)
            return USER_OK
        return USER_UNKNOWN.format(address=address)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self._peer.messages.append(bytes(envelope.original_content or b""))
        # RFC 2033 §4.2: one reply for each accepted recipient, in RCPT order (Dovecot's words).
        return "\r\n".join(f"250 2.0.0 <{rcpt}> Saved" for rcpt in envelope.rcpt_tos) or "250 2.0.0 OK"


class _Fixed(asyncio.Protocol):
    """Greets with a fixed line (or never), then ignores the client."""

    def __init__(self, peer: "LmtpPeer", greeting: str | None) -> None:
        self._peer = peer
        self._greeting = greeting

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer.transports.add(transport)
        if self._greeting is not None and isinstance(transport, asyncio.WriteTransport):
            transport.write(self._greeting.encode() + b"\r\n")


class LmtpPeer:
    """A real LMTP server on `address:port` (port 0: any free port) or on the unix socket `unix_path`."""

    def __init__(
        self,
        address: str = "127.0.0.1",
        port: int = 0,
        *,
        unix_path: Path | None = None,
        users: set[str] | frozenset[str] = frozenset(),
        rules: dict[str, str] | None = None,
        smtputf8: bool = True,
        silent: bool = False,
        greeting: str | None = None,
        dsn: bool = False,
    ) -> None:
        self.address = address
        self.port = port
        self.unix_path = unix_path
        self.users = set(users)
        self.rules = dict(rules or {})
        self.smtputf8 = smtputf8
        self.silent = silent
        self.greeting = greeting
        self.dsn = dsn
        self.gate = asyncio.Event()
        self.gate.set()
        self.connections = 0
        self.rcpts: list[str] = []
        self.rcpt_args: list[str] = []
        self.mail_params: list[list[str]] = []
        self.mail_args: list[str] = []
        self.helos: list[str] = []
        self.messages: list[bytes] = []
        self.in_rcpt = 0
        self.max_in_rcpt = 0
        self.transports: set[asyncio.BaseTransport] = set()
        self._server: asyncio.Server | None = None

    @property
    def transport_spec(self) -> str:
        """This peer as a KUBEMTA_TRANSPORTS next hop (`lmtp:[address]:port` or `lmtp:unix:/path`)."""
        if self.unix_path is not None:
            return f"lmtp:unix:{self.unix_path}"
        return f"lmtp:[{self.address}]:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.unix_path is not None:
            self._server = await loop.create_unix_server(self._factory, str(self.unix_path))
            return
        self._server = await loop.create_server(self._factory, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self.gate.set()
        self._server.close()
        for transport in list(self.transports):
            transport.close()
        async with asyncio.timeout(5):
            await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "LmtpPeer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _factory(self) -> asyncio.BaseProtocol:
        self.connections += 1
        if self.silent or self.greeting is not None:
            return _Fixed(self, None if self.silent else self.greeting)
        return _TrackedLMTP(self, _Handler(self), hostname="mailstore.test", enable_SMTPUTF8=self.smtputf8)


class _TrackedLMTP(DsnCommands, LMTP):
    """aiosmtpd's LMTP, remembering its transport so that `stop` can close it; MAIL and RCPT as DsnCommands has
    them (their arguments recorded, DSN parameters taken when offered)."""

    def __init__(self, peer: LmtpPeer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, loop=asyncio.get_running_loop(), **kwargs)
        self._peer = peer
        self.offer_dsn(peer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer.transports.add(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.transport is not None:
            self._peer.transports.discard(self.transport)
        super().connection_lost(error)
