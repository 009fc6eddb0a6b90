"""One LMTP session (RFC 2033) with a mailbox server: connect over TCP or a unix socket,
greeting, LHLO, MAIL FROM, RCPT per recipient, DATA, then one reply per accepted
recipient, QUIT.

LMTP differs from SMTP where it matters here (RFC 2033 §4.2): after the final dot the
server answers once for every recipient it accepted at RCPT, in RCPT order, so each
recipient gets its own outcome (2xx delivered, 4xx temporary, 5xx permanent). A
connection lost or timed out after the dot leaves the recipients not yet answered
with an unknown fate: they are deferred (4.4.2) and a line warns that a duplicate is
possible; those already answered keep their answer.

Plain text only: the mailbox server is local or in-cluster, and Postfix's LMTP client
does no TLS by default either (`lmtp_tls_security_level` is empty). The client is
built on asyncio streams: aiosmtplib reads one reply per command and would lose the
second of two replies arriving in one segment, which is the normal case after DATA.
"""

import asyncio
import logging
import os
from dataclasses import dataclass

from aiosmtplib.email import quote_address
from aiosmtplib.esmtp import parse_esmtp_extensions

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import message_data
from kubemta_delivery_worker.connection import (
    STATUS_BAD_CONNECTION,
    STATUS_NO_ANSWER,
    HostFailure,
    SmtpOptions,
    host_label,
)
from kubemta_delivery_worker.eight_bit import content_for_server
from kubemta_delivery_worker.mail_parameters import mail_from_parameters, screen_smtputf8
from kubemta_delivery_worker.replies import enhanced_status, local_result, reply_diagnostic, reply_result
from kubemta_delivery_worker.transaction import (
    STATUS_BAD_RECIPIENT_SYNTAX,
    STATUS_BAD_SENDER_SYNTAX,
    STATUS_SMTPUTF8_REQUIRED,
    HostAttempt,
)

logger = logging.getLogger(__name__)

# RFC 5321 §4.2.2 (LMTP replies are SMTP replies, RFC 2033 §4): greeting, OK, go ahead.
SERVICE_READY = 220
START_MAIL_INPUT = 354
# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets; be lenient with long texts.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
QUIT_TIMEOUT = 10.0
# Port 24 (IANA "lmtp", Postfix lmtp(8) default) when a TCP route host carries none.
LMTP_PORT = 24


class LmtpProtocolError(Exception):
    """The server sent something that is not an LMTP reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One server reply: code and text (lines joined by newlines)."""

    code: int
    text: str


def lmtp_label(host: message_pb2.RouteHost) -> str:
    """The unix socket path, or `name[address]:port`."""
    return host.unix_socket or host_label(host)


def lmtp_remote_mta(host: message_pb2.RouteHost) -> str:
    """The Remote-MTA of results: the host name (or address), or the socket path."""
    return host.unix_socket or host.hostname.rstrip(".") or host.address


async def attempt_lmtp_host(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
) -> HostAttempt:
    """Deliver `job` to `recipients` through the LMTP server `host`; never raises for LMTP or network failures."""
    return await _LmtpSession(host, job, recipients, options).run()


class _HostFailed(Exception):
    def __init__(self, failure: HostFailure) -> None:
        super().__init__(failure.diagnostic)
        self.failure = failure


class _LmtpSession:
    def __init__(
        self, host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
    ) -> None:
        self._host = host
        self._job = job
        self._recipients = recipients
        self._options = options
        self._label = lmtp_label(host)
        self._remote_mta = lmtp_remote_mta(host)
        self._stage = "connecting"
        self._attempt = HostAttempt()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._extensions: dict[str, str] = {}

    def _log_extra(self) -> dict[str, object]:
        return {"queue_id": self._job.queue_id, "host": self._label}

    async def run(self) -> HostAttempt:
        try:
            await self._open()
            await self._transaction()
            await self._quit()
        except _HostFailed as exc:
            self._attempt.failure = exc.failure
        except TimeoutError:
            self._attempt.failure = HostFailure(
                f"conversation with {self._label} timed out while {self._stage}",
                STATUS_BAD_CONNECTION,
                remote_mta=self._remote_mta,
            )
        except (OSError, EOFError, LmtpProtocolError) as exc:
            self._attempt.failure = HostFailure(
                f"lost connection with {self._label} while {self._stage}: {_describe(exc)}",
                STATUS_BAD_CONNECTION,
                remote_mta=self._remote_mta,
            )
        finally:
            self._close()
        return self._attempt

    # -- connection --------------------------------------------------------------------

    async def _open(self) -> None:
        """Connect, read the greeting (220) and say LHLO (RFC 2033 §4.1: there is no HELO fallback)."""
        try:
            async with asyncio.timeout(self._options.clamp(self._options.connect_timeout)):  # attempt_limits
                if self._host.unix_socket:
                    self._reader, self._writer = await asyncio.open_unix_connection(self._host.unix_socket)
                else:
                    port = self._host.port or LMTP_PORT
                    self._reader, self._writer = await asyncio.open_connection(self._host.address, port)
                self._stage = "receiving the initial server greeting"
                greeting = await self._read_reply()
        except TimeoutError as exc:
            what = "connect" if self._writer is None else "greeting"
            text = "Connection timed out" if what == "connect" else "timed out waiting for the server greeting"
            raise _HostFailed(HostFailure(f"connect to {self._label}: {text}", STATUS_NO_ANSWER)) from exc
        except OSError as exc:
            if self._writer is not None:
                raise
            raise _HostFailed(HostFailure(f"connect to {self._label}: {_describe(exc)}", STATUS_NO_ANSWER)) from exc
        if greeting.code != SERVICE_READY:
            raise self._rejected(greeting, "refused to talk to me", None)
        self._attempt.greeted = True
        self._stage = "performing the LHLO handshake"
        reply = await self._command(f"LHLO {self._options.ehlo_name}", self._options.command_timeout)
        if reply.code != 250:
            raise self._rejected(reply, "said", "LHLO")
        extensions, _ = parse_esmtp_extensions(reply.text)
        self._extensions = extensions

    def _rejected(self, reply: Reply, verb: str, command: str | None) -> _HostFailed:
        """A host-level refusal: the recipients are left for the next host or a later attempt (class 4)."""
        suffix = f" (in reply to {command} command)" if command else ""
        return _HostFailed(
            HostFailure(
                f"host {self._label} {verb}: {reply_diagnostic(reply.code, reply.text)}{suffix}",
                enhanced_status(message_pb2.OUTCOME_TEMPORARY, reply.text),
                reply.code,
                self._remote_mta,
            )
        )

    async def _read_reply(self) -> Reply:
        """One (possibly multi-line) reply (RFC 5321 §4.2.1); EOFError when the server closed the connection."""
        assert self._reader is not None
        lines: list[str] = []
        code = 0
        while len(lines) < MAX_REPLY_LINES:
            try:
                raw = await self._reader.readuntil(b"\n")
            except asyncio.LimitOverrunError as exc:
                raise LmtpProtocolError("reply line too long") from exc
            # asyncio.IncompleteReadError (end of stream) is an EOFError
            if len(raw) > MAX_REPLY_LINE:
                raise LmtpProtocolError("reply line too long")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise LmtpProtocolError(f"malformed reply line {line[:80]!r}")
            if lines and int(line[:3]) != code:
                raise LmtpProtocolError(f"reply code changed within a multi-line reply: {line[:80]!r}")
            code = int(line[:3])
            lines.append(line[4:].strip())
            if line[3:4] != "-":
                return Reply(code, "\n".join(lines))
        raise LmtpProtocolError("reply has too many lines")

    async def _reply(self, timeout: float) -> Reply:  # noqa: ASYNC109 - a per-reply RFC 5321 §4.5.3.2 timeout
        async with asyncio.timeout(self._options.clamp(timeout)):  # cut to the attempt's time left
            return await self._read_reply()

    async def _send(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        assert self._writer is not None
        self._writer.write(data)
        async with asyncio.timeout(self._options.clamp(timeout)):
            await self._writer.drain()

    async def _command(self, line: str, timeout: float, encoding: str = "ascii") -> Reply:  # noqa: ASYNC109
        await self._send(line.encode(encoding) + b"\r\n", timeout)
        return await self._reply(timeout)

    # -- the transaction ---------------------------------------------------------------

    async def _transaction(self) -> None:
        screen = screen_smtputf8(self._job, self._recipients, "smtputf8" in self._extensions)
        for rcpt in screen.refused:
            self._attempt.results[rcpt] = local_result(
                rcpt,
                message_pb2.OUTCOME_PERMANENT,
                STATUS_SMTPUTF8_REQUIRED,
                f"SMTPUTF8 is required, but was not offered by host {self._label}",
                remote_mta=self._remote_mta,
            )
        encoding = "utf-8" if screen.smtputf8 else "ascii"
        content = message_data.normalize_line_endings(self._job.content)
        prepared = await content_for_server(content, self._extensions, self._label, self._job.queue_id)  # RFC 6152 §3
        self._attempt.results.update(prepared.bounces(screen.send, self._remote_mta))
        content = prepared.content
        if prepared.refusal is not None or not screen.send:
            return
        if not await self._mail(screen.send, content, screen.smtputf8, encoding):
            return
        accepted = await self._rcpt(screen.send, encoding)
        if accepted:
            await self._data(accepted, content)

    async def _mail(self, recipients: list[str], content: bytes, smtputf8: bool, encoding: str) -> bool:
        """MAIL FROM; False when the transaction cannot go on (recipients answered, or a host failure raised)."""
        self._stage = "sending MAIL FROM"
        try:
            line = _command_line("MAIL FROM:", self._job.sender, encoding)
        except ValueError as exc:
            for rcpt in recipients:
                self._attempt.results[rcpt] = local_result(
                    rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_SENDER_SYNTAX, f"bad sender address: {exc}"
                )
            return False
        parameters = mail_from_parameters(self._extensions, content, smtputf8)
        reply = await self._command(" ".join([line, *parameters]), self._options.command_timeout, encoding)
        if reply.code == 250:
            return True
        if 500 <= reply.code < 600:
            for rcpt in recipients:
                self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.text, self._remote_mta)
            await self._reset()
            return False
        raise self._rejected(reply, "said", "MAIL FROM")

    async def _rcpt(self, recipients: list[str], encoding: str) -> list[str]:
        """RCPT TO per recipient; returns the accepted ones in order, records the refused ones."""
        self._stage = "sending RCPT TO"
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                line = _command_line("RCPT TO:", rcpt, encoding)
            except ValueError as exc:
                self._attempt.results[rcpt] = local_result(
                    rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_RECIPIENT_SYNTAX, f"bad recipient address: {exc}"
                )
                continue
            reply = await self._command(line, self._options.command_timeout, encoding)
            if reply.code in (250, 251):
                accepted.append(rcpt)
            else:
                self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.text, self._remote_mta)
        if not accepted:
            await self._reset()
        return accepted

    async def _data(self, accepted: list[str], content: bytes) -> None:
        """DATA, the content, then one reply per accepted recipient in RCPT order (RFC 2033 §4.2)."""
        self._stage = "sending DATA command"
        reply = await self._command("DATA", self._options.command_timeout)
        if reply.code != START_MAIL_INPUT:
            # Anything but 354 refuses the data; a stray 2xx must not count as delivered.
            outcome = message_pb2.OUTCOME_PERMANENT if 500 <= reply.code < 600 else message_pb2.OUTCOME_TEMPORARY
            for rcpt in accepted:
                self._attempt.results[rcpt] = reply_result(
                    rcpt, reply.code, reply.text, self._remote_mta, outcome=outcome
                )
            return
        self._stage = "sending message body"
        if self._options.expired():  # no final dot after the attempt's deadline: deferred, never a duplicate
            raise TimeoutError
        await self._send(message_data.wire_data(content), self._options.data_timeout)
        self._stage = "waiting for the replies to the end of data"
        for index, rcpt in enumerate(accepted):
            try:
                reply = await self._reply(self._options.data_timeout)
            except (TimeoutError, OSError, EOFError, LmtpProtocolError) as exc:
                self._unknown_fate(accepted[index:], exc)
                self._close()
                return
            self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.text, self._remote_mta)

    def _unknown_fate(self, unanswered: list[str], exc: BaseException) -> None:
        """The final dot went out, some replies did not come: maybe delivered, so retry later, not elsewhere now."""
        what = "timed out" if isinstance(exc, TimeoutError) else f"lost connection ({_describe(exc)})"
        diagnostic = (
            f"{what} with {self._label} while waiting for the reply to the end of data "
            "-- message may be sent more than once"
        )
        logger.warning(
            "possible duplicate delivery to %d recipient(s): %s",
            len(unanswered),
            diagnostic,
            extra={**self._log_extra(), "duplicate_possible": True, "unanswered": unanswered},
        )
        for rcpt in unanswered:
            self._attempt.results[rcpt] = local_result(
                rcpt, message_pb2.OUTCOME_TEMPORARY, STATUS_BAD_CONNECTION, diagnostic, remote_mta=self._remote_mta
            )

    async def _reset(self) -> None:
        """RSET after a transaction that ends before DATA (RFC 5321 §4.1.1.5); its failure changes nothing."""
        self._stage = "sending RSET"
        try:
            await self._command("RSET", self._options.command_timeout)
        except (TimeoutError, OSError, EOFError, LmtpProtocolError) as exc:
            logger.debug("RSET to %s failed: %s", self._label, exc, extra=self._log_extra())
            self._close()

    async def _quit(self) -> None:
        """QUIT politely; its failure changes nothing (RFC 5321 §4.1.1.10)."""
        if self._writer is None or self._writer.is_closing():
            return
        self._stage = "sending QUIT"
        try:
            await self._command("QUIT", min(self._options.command_timeout, QUIT_TIMEOUT))
        except (TimeoutError, OSError, EOFError, LmtpProtocolError) as exc:
            logger.debug("QUIT to %s failed: %s", self._label, exc, extra=self._log_extra())

    def _close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()


def _command_line(verb: str, address: str, encoding: str) -> str:
    """`MAIL FROM:<address>` / `RCPT TO:<address>`; ValueError when the address cannot go on a command line."""
    if any(char in address for char in "\r\n\0"):
        raise ValueError(f"{address!r} contains a line break")
    quoted = quote_address(address)
    quoted.encode(encoding)  # UnicodeEncodeError (a ValueError) without SMTPUTF8
    return verb + quoted


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, EOFError):
        return "connection closed by the server"
    return str(exc) or type(exc).__name__
