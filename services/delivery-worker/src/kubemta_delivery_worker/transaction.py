"""One SMTP session with one host of a route (aiosmtplib): connect, EHLO, opportunistic
STARTTLS, one mail transaction, QUIT.

The outcome is a final result for each recipient the host answered, and, for the
recipients it did not answer (connection refused, timed out or lost, MAIL FROM 4xx),
a `HostFailure` telling the deliverer to try the next host. A connection lost after
the final dot was sent is the one case where a recipient is neither delivered nor
retried elsewhere now: the host may have taken the message (RFC 5321 §6.1 asks the
client to treat the message as undelivered, so a duplicate is possible).
"""

import logging
import os
import ssl
from dataclasses import dataclass, field

from aiosmtplib import (
    SMTP,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import message_data
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS
from kubemta_delivery_worker.replies import enhanced_status, local_result, reply_diagnostic, reply_result

logger = logging.getLogger(__name__)

# RFC 5321 §4.2.2 / §3.3: 354 is the go-ahead for the message data.
START_MAIL_INPUT = 354
# Port 25 (RFC 5321 §4.5.4 / IANA "smtp") when a route host carries none.
SMTP_PORT = 25
# RFC 3463 §3.5: 4.4.1 no answer from host, 4.4.2 bad connection.
STATUS_NO_ANSWER = "4.4.1"
STATUS_BAD_CONNECTION = "4.4.2"
# RFC 6531 §3.5 / RFC 6533: 5.6.7 non-ASCII addresses not permitted for that recipient.
STATUS_SMTPUTF8_REQUIRED = "5.6.7"
# RFC 3463 §3.2: 5.1.3 bad destination mailbox address syntax, 5.1.7 bad sender's syntax.
STATUS_BAD_RECIPIENT_SYNTAX = "5.1.3"
STATUS_BAD_SENDER_SYNTAX = "5.1.7"


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """How the worker speaks SMTP: its EHLO name, TLS context and timeouts (seconds)."""

    ehlo_name: str
    tls_context: ssl.SSLContext
    connect_timeout: float
    command_timeout: float
    data_timeout: float


@dataclass(frozen=True, slots=True)
class HostFailure:
    """Why a host left recipients without a final answer; reported (as temporary) if it was the last host."""

    diagnostic: str
    status: str
    smtp_code: int = 0
    remote_mta: str = ""


@dataclass(slots=True)
class HostAttempt:
    """What one host did: final results for the recipients it answered, and why it did not answer the rest."""

    results: dict[str, message_pb2.RecipientResult] = field(default_factory=dict)
    failure: HostFailure | None = None
    tls: bool = False


class _HostFailed(Exception):
    def __init__(self, failure: HostFailure) -> None:
        super().__init__(failure.diagnostic)
        self.failure = failure


class _TlsFailed(Exception):
    """The STARTTLS handshake failed; the session must be redone in plaintext."""


def host_port(host: message_pb2.RouteHost) -> int:
    """The port to connect to."""
    return host.port or SMTP_PORT


def host_label(host: message_pb2.RouteHost) -> str:
    """`name[address]:port`, the way Postfix names a peer in logs and diagnostics."""
    return f"{host.hostname or host.address}[{host.address}]:{host_port(host)}"


def _temporary_reply_status(code: int, text: str) -> str:
    # A host-level rejection (greeting, EHLO, MAIL 4xx) is retried elsewhere or later,
    # so its status is always of class 4 (Postfix smtp_skip_5xx_greeting behaviour).
    return enhanced_status(message_pb2.OUTCOME_TEMPORARY, text) if code else STATUS_NO_ANSWER


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)  # asyncio's strerror also holds the address: say it once
    if isinstance(exc, SMTPException):
        return exc.message
    return str(exc) or type(exc).__name__


async def attempt_host(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
) -> HostAttempt:
    """Deliver `job` to `recipients` through `host`; a failed TLS handshake is retried in plaintext."""
    try:
        return await _Session(host, job, recipients, options, starttls=True).run()
    except _TlsFailed as exc:
        logger.warning(
            "TLS handshake with %s failed (%s); delivering in plaintext",
            host_label(host),
            exc,
            extra={"queue_id": job.queue_id, "host": host_label(host)},
        )
        return await _Session(host, job, recipients, options, starttls=False).run()


class _Session:
    """One connection to one host; `run()` never raises for SMTP or network failures."""

    def __init__(
        self,
        host: message_pb2.RouteHost,
        job: message_pb2.DeliveryJob,
        recipients: list[str],
        options: SmtpOptions,
        *,
        starttls: bool,
    ) -> None:
        self._host = host
        self._job = job
        self._recipients = recipients
        self._options = options
        self._starttls = starttls
        self._label = host_label(host)
        self._remote_mta = host.hostname.rstrip(".") or host.address
        self._stage = "connecting"
        self._connection_counted = False
        self._attempt = HostAttempt()
        self._smtp = SMTP(
            hostname=host.address,
            port=host_port(host),
            local_hostname=options.ehlo_name,
            timeout=options.command_timeout,
            start_tls=False,
            validate_certs=False,
            tls_context=options.tls_context,
        )

    def _count_connection(self, result: str) -> None:
        if not self._connection_counted:
            self._connection_counted = True
            SMTP_CONNECTIONS.labels(result=result).inc()

    def _fail(self, diagnostic: str, status: str, smtp_code: int = 0, remote_mta: str = "") -> HostFailure:
        return HostFailure(diagnostic=diagnostic, status=status, smtp_code=smtp_code, remote_mta=remote_mta)

    async def run(self) -> HostAttempt:
        try:
            await self._open()
            self._count_connection("ok")
            await self._transaction()
        except _HostFailed as exc:
            self._attempt.failure = exc.failure
        except SMTPTimeoutError:
            self._count_connection("timeout")
            self._attempt.failure = self._fail(
                f"conversation with {self._label} timed out while {self._stage}",
                STATUS_BAD_CONNECTION,
                remote_mta=self._remote_mta,
            )
        except (SMTPException, OSError) as exc:
            self._count_connection("error")
            self._attempt.failure = self._fail(
                f"lost connection with {self._label} while {self._stage}: {_describe(exc)}",
                STATUS_BAD_CONNECTION,
                remote_mta=self._remote_mta,
            )
        finally:
            self._count_connection("error")
            self._smtp.close()
        return self._attempt

    async def _open(self) -> None:
        """Connect, read the greeting, EHLO, and upgrade to TLS when offered."""
        try:
            await self._smtp.connect(timeout=self._options.connect_timeout)
        except SMTPConnectTimeoutError as exc:
            self._count_connection("timeout")
            raise _HostFailed(self._fail(f"connect to {self._label}: {_timeout_text(exc)}", STATUS_NO_ANSWER)) from exc
        except SMTPConnectResponseError as exc:
            self._count_connection("error")
            raise _HostFailed(
                self._fail(
                    f"host {self._label} refused to talk to me: {reply_diagnostic(exc.code, exc.message)}",
                    _temporary_reply_status(exc.code, exc.message),
                    exc.code,
                    self._remote_mta,
                )
            ) from exc
        except SMTPConnectError as exc:
            refused = isinstance(exc.__cause__, ConnectionRefusedError)
            self._count_connection("refused" if refused else "error")
            raise _HostFailed(self._fail(f"connect to {self._label}: {_describe(exc)}", STATUS_NO_ANSWER)) from exc
        await self._hello()
        if self._starttls and self._smtp.supports_extension("starttls"):
            await self._upgrade()

    async def _hello(self) -> None:
        """EHLO, falling back to HELO when the server rejects EHLO with 5xx (RFC 5321 §3.2)."""
        self._stage = "performing the EHLO handshake"
        try:
            await self._smtp.ehlo()
            return
        except SMTPHeloError as exc:
            if not (500 <= exc.code < 600 and self._smtp.is_connected):
                raise self._rejected(exc, "EHLO") from exc
        self._stage = "performing the HELO handshake"
        try:
            await self._smtp.helo()
        except SMTPHeloError as exc:
            raise self._rejected(exc, "HELO") from exc

    def _rejected(self, exc: SMTPResponseException, command: str) -> _HostFailed:
        return _HostFailed(
            self._fail(
                f"host {self._label} said: {reply_diagnostic(exc.code, exc.message)} (in reply to {command} command)",
                _temporary_reply_status(exc.code, exc.message),
                exc.code,
                self._remote_mta,
            )
        )

    async def _upgrade(self) -> None:
        """STARTTLS (RFC 3207) with SNI; a refusal continues in plaintext, a failed handshake starts over."""
        self._stage = "performing the STARTTLS handshake"
        server_hostname = self._host.hostname.rstrip(".") or None
        try:
            await self._smtp.starttls(server_hostname=server_hostname)
        except SMTPResponseException as exc:
            logger.info(
                "%s refused STARTTLS (%s); continuing in plaintext",
                self._label,
                reply_diagnostic(exc.code, exc.message),
                extra={"queue_id": self._job.queue_id, "host": self._label},
            )
            return
        except (SMTPException, ssl.SSLError, OSError) as exc:
            self._count_connection("tls_failed")
            raise _TlsFailed(_describe(exc)) from exc
        self._attempt.tls = True
        # RFC 3207 §4.2: forget what the server said before TLS and say EHLO again.
        await self._hello()

    def _smtputf8_screen(self) -> tuple[list[str], bool]:
        """Recipients to send to, and whether to use SMTPUTF8 (RFC 6531 §3.4); records 5.6.7 for the rest."""
        whole_message = self._job.smtputf8 or not self._job.sender.isascii()
        non_ascii = [rcpt for rcpt in self._recipients if not rcpt.isascii()]
        if not (whole_message or non_ascii):
            return list(self._recipients), False
        if self._smtp.supports_extension("smtputf8"):
            return list(self._recipients), True
        refused = self._recipients if whole_message else non_ascii
        diagnostic = f"SMTPUTF8 is required, but was not offered by host {self._label}"
        for rcpt in refused:
            self._attempt.results[rcpt] = local_result(
                rcpt,
                message_pb2.OUTCOME_PERMANENT,
                STATUS_SMTPUTF8_REQUIRED,
                diagnostic,
                remote_mta=self._remote_mta,
            )
        return [rcpt for rcpt in self._recipients if rcpt not in refused], False

    def _mail_options(self, content: bytes, smtputf8: bool) -> list[str]:
        options: list[str] = []
        if self._smtp.supports_extension("size"):
            options.append(f"SIZE={len(content)}")  # RFC 1870 §6
        if message_data.has_8bit(content) and self._smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")  # RFC 6152 §2
        if smtputf8:
            options.append("SMTPUTF8")  # RFC 6531 §3.4
        return options

    async def _transaction(self) -> None:
        """MAIL, RCPT per recipient, DATA when any was accepted, QUIT."""
        recipients, smtputf8 = self._smtputf8_screen()
        if recipients and await self._mail(recipients, smtputf8):
            accepted = await self._rcpt(recipients, "utf-8" if smtputf8 else "ascii")
            if accepted:
                await self._data(accepted)
        await self._quit()

    async def _mail(self, recipients: list[str], smtputf8: bool) -> bool:
        """MAIL FROM; False when the transaction cannot go on (recipients answered or host failure)."""
        self._stage = "sending MAIL FROM"
        content = message_data.normalize_line_endings(self._job.content)
        try:
            await self._smtp.mail(
                self._job.sender,
                options=self._mail_options(content, smtputf8),
                encoding="utf-8" if smtputf8 else "ascii",
            )
        except SMTPSenderRefused as exc:
            if 500 <= exc.code < 600:
                for rcpt in recipients:
                    self._attempt.results[rcpt] = reply_result(rcpt, exc.code, exc.message, self._remote_mta)
            else:
                self._attempt.failure = self._rejected(exc, "MAIL FROM").failure
            return False
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            for rcpt in recipients:
                self._attempt.results[rcpt] = local_result(
                    rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_SENDER_SYNTAX, f"bad sender address: {exc}"
                )
            return False
        return True

    async def _rcpt(self, recipients: list[str], encoding: str) -> list[str]:
        """RCPT TO for each recipient; returns the accepted ones, records the refused ones."""
        self._stage = "sending RCPT TO"
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                await self._smtp.rcpt(rcpt, encoding=encoding)
            except SMTPRecipientRefused as exc:
                self._attempt.results[rcpt] = reply_result(rcpt, exc.code, exc.message, self._remote_mta)
            except ValueError as exc:
                self._attempt.results[rcpt] = local_result(
                    rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_RECIPIENT_SYNTAX, f"bad recipient address: {exc}"
                )
            else:
                accepted.append(rcpt)
        return accepted

    async def _data(self, accepted: list[str]) -> None:
        """DATA, the content, and the reply to the final dot, which applies to every accepted recipient."""
        self._stage = "sending DATA command"
        reply = await self._smtp.execute_command(b"DATA")
        if reply.code != START_MAIL_INPUT:
            # Anything but 354 refuses the data; a stray 2xx must not count as delivered.
            outcome = message_pb2.OUTCOME_PERMANENT if 500 <= reply.code < 600 else message_pb2.OUTCOME_TEMPORARY
            for rcpt in accepted:
                self._attempt.results[rcpt] = reply_result(
                    rcpt, reply.code, reply.message, self._remote_mta, outcome=outcome
                )
            return
        protocol = self._smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        self._stage = "sending message body"
        # Sent through the protocol directly (aiosmtplib's data() cannot tell whether the
        # connection died before or after the final dot, and only the latter risks a duplicate).
        protocol.write(message_data.wire_data(message_data.normalize_line_endings(self._job.content)))
        try:
            reply = await protocol.read_response(timeout=self._options.data_timeout)
        except SMTPException as exc:
            self._smtp.close()
            self._unknown_fate(accepted, exc)
            return
        for rcpt in accepted:
            self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.message, self._remote_mta)

    def _unknown_fate(self, accepted: list[str], exc: SMTPException) -> None:
        """The final dot went out but no reply came: maybe delivered, so retry later, not elsewhere now."""
        what = "timed out" if isinstance(exc, SMTPTimeoutError) else "lost connection"
        diagnostic = (
            f"{what} with {self._label} while waiting for the reply to the end of data "
            "-- message may be sent more than once"
        )
        logger.warning(
            "possible duplicate delivery to %d recipient(s): %s",
            len(accepted),
            diagnostic,
            extra={"queue_id": self._job.queue_id, "host": self._label, "duplicate_possible": True},
        )
        for rcpt in accepted:
            self._attempt.results[rcpt] = local_result(
                rcpt,
                message_pb2.OUTCOME_TEMPORARY,
                STATUS_BAD_CONNECTION,
                diagnostic,
                remote_mta=self._remote_mta,
            )

    async def _quit(self) -> None:
        """QUIT politely; its failure changes nothing (RFC 5321 §4.1.1.10)."""
        if not self._smtp.is_connected:
            return
        self._stage = "sending QUIT"
        try:
            await self._smtp.quit()
        except (SMTPException, OSError) as exc:
            logger.debug("QUIT to %s failed: %s", self._label, exc, extra={"queue_id": self._job.queue_id})


def _timeout_text(exc: SMTPConnectTimeoutError) -> str:
    # aiosmtplib raises the same error for the TCP connect and for the greeting.
    return "Connection timed out" if "connecting" in exc.message else "timed out waiting for the server greeting"
