"""A scripted SMTP peer for tests: a real aiosmtpd server on a loopback address, run in
the test's own event loop, whose replies follow a script.

    peer = ScriptedPeer("127.0.3.7", 0, rules={"reject": "550 5.1.1 No such user"})
    await peer.start()            # peer.port now holds the bound port
    ...                           # deliver to peer.address:peer.port
    [message] = await peer.wait_for_messages(1, timeout=5)
    await peer.stop()

Scripts:
- `rules`: RCPT reply by recipient local part. A list is consumed one reply per RCPT
  for that local part, the last one repeating (["451 4.3.0 try later", "250 2.1.5 Ok"]
  fails once, then accepts). Local parts without a rule get `250 2.1.5 Ok`.
- `mail_reply`, `data_reply`, `ehlo_reply`: the same for MAIL FROM, the final dot and
  EHLO (`ehlo_reply` replaces the whole EHLO answer, e.g. "502 5.5.2 Not implemented").
- `DROP` as any reply closes the connection instead of answering.
- `tls_cert`: offer STARTTLS with that (cert, key), e.g. from `make_self_signed_cert`;
  `tls_broken`: offer STARTTLS, then answer the handshake in plaintext so that it fails.
- `smtputf8`: offer SMTPUTF8 (default yes); `silent`: accept connections and never send
  a greeting (for timeouts).
- `data_delay`: seconds to wait before answering the final dot (a slow server).
- `before_data_reply`: called (in the peer's loop) after a message's content arrived and before the reply to
  its final dot is sent: the one moment when the client has sent the message and cannot yet know the outcome.
- `pipelining`: offer PIPELINING (RFC 2920) in EHLO (default no, as aiosmtpd).
- `eight_bit_mime`: offer 8BITMIME (RFC 6152) in EHLO (default yes, as aiosmtpd); False makes
  a server that a client must send 7-bit content only.
- `dsn`: offer DSN (RFC 3461) in EHLO (default no, as aiosmtpd) and take its parameters: RET and
  ENVID on MAIL, NOTIFY and ORCPT on RCPT, checked with kubemta_common.dsn_parameters (a bad one
  gets Postfix's `501 5.5.4 Bad NOTIFY parameter syntax`), the command lines 500 (RCPT) and 100
  (MAIL) characters longer (RFC 3461 §5). Without it a client that sends them gets aiosmtpd's
  `555 ... parameters not recognized`, as from a server that never heard of DSN.

`messages` holds the messages accepted with a 2xx reply to the final dot (in arrival
order), `refused_messages` those answered otherwise or dropped; `connections` counts
the connections made to the peer; `rsets` the RSET commands received (answered with
`rset_reply`, which may be set to DROP); `in_data` the
transactions waiting for the reply to their final dot now, `max_in_data` its peak.
`drop_connections()` closes every open connection from the server side.
`mail_args` and `rcpt_args` hold the MAIL and RCPT arguments as they arrived (`FROM:<a@b> SIZE=9
RET=HDRS`), before aiosmtpd upper-cases the parameters, of every command (accepted or not).
"""

import asyncio
import collections
import re
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta_common import dsn_parameters

Reply = str | list[str]
DROP = "<drop>"
DEFAULT_MAIL_REPLY = "250 2.1.0 Ok"
DEFAULT_RCPT_REPLY = "250 2.1.5 Ok"
DEFAULT_DATA_REPLY = "250 2.0.0 Ok: queued"


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the peer received it; `mail_from` is "" for the null sender <>."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    mail_options: list[str] = field(default_factory=list)
    helo: str = ""
    reply: str = ""


def make_self_signed_cert(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """Write a self-signed certificate and its key into `directory` with the openssl CLI."""
    cert, key = directory / "peer-cert.pem", directory / "peer-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2",
            "-subj", f"/CN={common_name}", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


class _Script:
    """Replies consumed in order; the last one repeats."""

    def __init__(self, reply: Reply | None, default: str) -> None:
        self._replies = [reply] if isinstance(reply, str) else list(reply or [])
        self._default = default

    def next(self) -> str:
        if not self._replies:
            return self._default
        return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]


def _accepts(reply: str) -> bool:
    return reply.startswith("2")


def _abort_transport(transport: asyncio.BaseTransport | None) -> None:
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    elif transport is not None:
        transport.close()


def _abort(server: SMTP) -> None:
    """Drop an aiosmtpd connection at once (the TCP transport under TLS too)."""
    _abort_transport(getattr(server, "_original_transport", None))
    _abort_transport(server.transport)


class _Handler:
    """aiosmtpd hooks answering from the peer's scripts."""

    def __init__(self, peer: "ScriptedPeer") -> None:
        self._peer = peer

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self._peer.ehlo_reply is None:
            if not self._peer.eight_bit_mime:
                responses[:] = [line for line in responses if line[4:].upper() != "8BITMIME"]
            if self._peer.pipelining:  # aiosmtpd reads commands line by line: it can take a pipelined group
                responses.insert(-1, "250-PIPELINING")
            if self._peer.dsn:
                responses.insert(-1, "250-DSN")
            return responses
        return [self._peer.reply_or_drop(server, self._peer.ehlo_reply)]

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        reply = self._peer.reply_or_drop(server, self._peer.mail_script.next())
        if _accepts(reply):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._peer.reply_or_drop(server, self._peer.rcpt_reply(address))
        if _accepts(reply):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self._peer.rsets += 1
        return self._peer.reply_or_drop(server, self._peer.rset_reply)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        await self._peer.slow_data()
        if self._peer.before_data_reply is not None:
            self._peer.before_data_reply()
        reply = self._peer.reply_or_drop(server, self._peer.data_script.next())
        content = envelope.original_content or b""
        message = ReceivedMessage(
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            content=bytes(content),
            tls=session.ssl is not None,
            mail_options=list(envelope.mail_options),
            helo=session.host_name or "",
            reply=reply,
        )
        await self._peer.record(message, accepted=_accepts(reply))
        return reply


class _Silent(asyncio.Protocol):
    """Accepts a connection and never says anything."""

    def __init__(self, peer: "ScriptedPeer") -> None:
        self._peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer.track_transport(transport)


class ScriptedPeer:
    """A real SMTP server on `address:port` (port 0: any free port) answering from scripts."""

    def __init__(
        self,
        address: str,
        port: int = 0,
        *,
        rules: dict[str, Reply] | None = None,
        mail_reply: Reply | None = None,
        data_reply: Reply | None = None,
        ehlo_reply: str | None = None,
        tls_cert: tuple[Path, Path] | None = None,
        tls_broken: bool = False,
        smtputf8: bool = True,
        silent: bool = False,
        hostname: str = "peer.test",
        data_delay: float = 0.0,
        pipelining: bool = False,
        eight_bit_mime: bool = True,
        dsn: bool = False,
    ) -> None:
        self.address = address
        self.port = port
        self.hostname = hostname
        self.ehlo_reply = ehlo_reply
        self.mail_script = _Script(mail_reply, DEFAULT_MAIL_REPLY)
        self.data_script = _Script(data_reply, DEFAULT_DATA_REPLY)
        self._rules = {local: _Script(reply, DEFAULT_RCPT_REPLY) for local, reply in (rules or {}).items()}
        self._tls_context = self._make_tls_context(tls_cert, tls_broken)
        self._smtputf8 = smtputf8
        self._silent = silent
        self.tls_broken = tls_broken
        self.messages: list[ReceivedMessage] = []
        self.refused_messages: list[ReceivedMessage] = []
        self.connections = 0
        self.rsets = 0
        self.rset_reply = "250 2.0.0 Ok"
        self.data_delay = data_delay
        self.before_data_reply: Callable[[], None] | None = None
        self.pipelining = pipelining
        self.eight_bit_mime = eight_bit_mime
        self.dsn = dsn
        self.mail_args: list[str] = []
        self.rcpt_args: list[str] = []
        self.in_data = 0
        self.max_in_data = 0
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._protocols: set[SMTP] = set()
        self._transports: set[asyncio.BaseTransport] = set()

    @staticmethod
    def _make_tls_context(tls_cert: tuple[Path, Path] | None, broken: bool) -> ssl.SSLContext | None:
        if tls_cert is None and not broken:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if tls_cert is not None:
            context.load_cert_chain(*tls_cert)
        return context

    # -- life cycle --

    async def start(self) -> None:
        """Listen on address:port in the running event loop."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol_factory, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None:
            return
        self._server.close()
        for protocol in list(self._protocols):
            _abort(protocol)
        for transport in list(self._transports):
            _abort_transport(transport)
        async with asyncio.timeout(5):
            await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "ScriptedPeer":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _protocol_factory(self) -> asyncio.BaseProtocol:
        self.connections += 1
        if self._silent:
            return _Silent(self)
        protocol = _TrackedSMTP(
            self,
            _Handler(self),
            hostname=self.hostname,
            tls_context=self._tls_context,
            enable_SMTPUTF8=self._smtputf8,
            loop=asyncio.get_running_loop(),
        )
        self._protocols.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        """Close every open connection from the server side (e.g. an idle timeout)."""
        for protocol in list(self._protocols):
            _abort(protocol)

    async def slow_data(self) -> None:
        """Count a transaction waiting for its final reply, for `data_delay` seconds."""
        self.in_data += 1
        self.max_in_data = max(self.max_in_data, self.in_data)
        try:
            await asyncio.sleep(self.data_delay)
        finally:
            self.in_data -= 1

    def track_transport(self, transport: asyncio.BaseTransport) -> None:
        self._transports.add(transport)

    def forget(self, protocol: SMTP) -> None:
        self._protocols.discard(protocol)

    # -- scripts and records --

    def rcpt_reply(self, address: str) -> str:
        local = address.rpartition("@")[0] or address
        script = self._rules.get(local) or self._rules.get(local.lower())
        return script.next() if script is not None else DEFAULT_RCPT_REPLY

    def reply_or_drop(self, server: SMTP, reply: str) -> str:
        """The reply, or, for DROP, an aborted connection (the reply is then never sent)."""
        if reply != DROP:
            return reply
        _abort(server)
        return "421 4.4.2 dropped"

    async def record(self, message: ReceivedMessage, *, accepted: bool) -> None:
        (self.messages if accepted else self.refused_messages).append(message)
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:  # noqa: ASYNC109
        """Wait (at most `timeout` seconds) until `count` messages were accepted; returns them all."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)


# RFC 3461 §5: DSN makes RCPT lines up to 500 characters longer (ORCPT, and NOTIFY beside it), MAIL lines 100 (ENVID).
_DSN_COMMAND_LIMITS = {"RCPT": SMTP.command_size_limit + 500 + 40, "MAIL": SMTP.command_size_limit + 100 + 20}
_MAIL_DSN = re.compile(r" (RET|ENVID)=(\S*)", re.IGNORECASE)
_RCPT_DSN = re.compile(r" (NOTIFY|ORCPT)=(\S*)", re.IGNORECASE)


def _take_parameters(pattern: re.Pattern[str], arg: str) -> tuple[str, dict[str, str]]:
    """`arg` without the parameters `pattern` finds, and those parameters by upper-case name; ValueError for one
    given twice."""
    found: dict[str, str] = {}
    for match in pattern.finditer(arg):
        name = match.group(1).upper()
        if name in found:
            raise ValueError(name)
        found[name] = match.group(2)
    return pattern.sub("", arg), found


class DsnCommands(SMTP):
    """aiosmtpd's MAIL and RCPT, recording their arguments, and taking RFC 3461's parameters when `dsn_peer.dsn`:
    checked as kubemta's ingress (and Postfix) checks them, then removed before aiosmtpd's own parser, which
    refuses every parameter it does not know. `dsn_peer` has `dsn`, `mail_args` and `rcpt_args` (ScriptedPeer,
    lmtp_peer.LmtpPeer)."""

    dsn_peer: Any

    def offer_dsn(self, peer: Any) -> None:
        """Serve `peer`'s DSN option; call in __init__ (after aiosmtpd's, which clears the shared command limits)."""
        self.dsn_peer = peer
        if peer.dsn:  # an own copy: aiosmtpd's dict is a class attribute
            self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, _DSN_COMMAND_LIMITS)

    async def smtp_MAIL(self, arg: str) -> None:  # noqa: N802 - aiosmtpd command method
        self.dsn_peer.mail_args.append(arg)
        if self.dsn_peer.dsn and arg:
            try:
                arg, found = _take_parameters(_MAIL_DSN, arg)
                dsn_parameters.parse_ret(found.get("RET"))
                dsn_parameters.parse_envid(found.get("ENVID"))
            except dsn_parameters.DsnParameterError as exc:
                await self.push(exc.reply)
                return
            except ValueError as exc:
                await self.push(f"501 5.5.4 Duplicate {exc} parameter")
                return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:  # noqa: N802 - aiosmtpd command method
        self.dsn_peer.rcpt_args.append(arg)
        if self.dsn_peer.dsn and arg:
            smtputf8 = self.envelope is not None and bool(self.envelope.smtp_utf8)
            try:
                arg, found = _take_parameters(_RCPT_DSN, arg)
                dsn_parameters.parse_recipient_dsn(found.get("NOTIFY"), found.get("ORCPT"), smtputf8=smtputf8)
            except dsn_parameters.DsnParameterError as exc:
                await self.push(exc.reply)
                return
            except ValueError as exc:
                await self.push(f"501 5.5.4 Duplicate {exc} parameter")
                return
        await super().smtp_RCPT(arg)


class _TrackedSMTP(DsnCommands):
    """aiosmtpd's SMTP, telling the peer when its connection is gone."""

    def __init__(self, peer: ScriptedPeer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._peer = peer
        self.offer_dsn(peer)

    def connection_lost(self, error: Exception | None) -> None:
        self._peer.forget(self)
        super().connection_lost(error)

    async def smtp_STARTTLS(self, arg: str) -> None:  # noqa: N802 - aiosmtpd command method
        if not self._peer.tls_broken:
            await super().smtp_STARTTLS(arg)
            return
        # Say yes, then answer the client's TLS hello with plaintext: the handshake fails.
        await self.push("220 2.0.0 Ready to start TLS")
        await asyncio.sleep(0.05)  # let the client start its handshake
        await self.push("this is not TLS")
        if self.transport is not None:
            self.transport.close()
