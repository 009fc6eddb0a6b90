"""One SMTP session with one host of a route (aiosmtplib): connect, greeting, EHLO
(HELO when EHLO is refused), opportunistic STARTTLS as the route's TLS policy asks,
AUTH to a relayhost; then RSET between transactions and QUIT at the end. In the LMTP
dialect (dialect.py) the same session connects over TCP or a unix socket and says LHLO.

Within a delivery attempt (SmtpOptions.deadline, attempt_limits.py) the connect and
greeting timeout and every command's timeout are cut to the attempt's time left, no
connection is opened once it has passed, and the attempt's watchdog may close the session.

The mail transactions a session carries, and the idle cache it goes back to, are
transaction.py's and mail_transaction.py's; here are the session and how its failures read (`HostFailure`,
worded the way Postfix words them: "lost connection with NAME[ADDR]:PORT while ...").
"""

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtplib import (
    SMTP,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPStatus,
)

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.attempt_limits import AttemptDeadline, deadline_text
from kubemta_delivery_worker.dialect import SMTP_DIALECT, Dialect
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS
from kubemta_delivery_worker.relay_auth import authenticate, session_route
from kubemta_delivery_worker.replies import enhanced_status, reply_diagnostic
from kubemta_delivery_worker.smtp_options import SmtpOptions
from kubemta_delivery_worker.tls_negotiation import contexts, negotiate
from kubemta_delivery_worker.wire import PIPELINING

logger = logging.getLogger(__name__)

# Port 25 (RFC 5321 §4.5.4 / IANA "smtp") when a route host carries none.
SMTP_PORT = SMTP_DIALECT.default_port
# RFC 3463 §3.5: 4.4.1 no answer from host, 4.4.2 bad connection.
STATUS_NO_ANSWER = "4.4.1"
STATUS_BAD_CONNECTION = "4.4.2"
# Postfix smtp_quit_timeout is 300s; a QUIT to a session we are done with is not worth waiting long for.
QUIT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HostFailure:
    """Why a host left recipients without a final answer; reported (as temporary) if it was the last host."""

    diagnostic: str
    status: str
    smtp_code: int = 0
    remote_mta: str = ""


class HostFailed(Exception):
    """A host-level failure that ends the session or the transaction (carried as a HostFailure)."""

    def __init__(self, failure: HostFailure) -> None:
        super().__init__(failure.diagnostic)
        self.failure = failure


class TlsFailed(Exception):
    """The STARTTLS handshake failed; the session must be redone in plaintext."""


def host_port(host: message_pb2.RouteHost) -> int:
    """The port to connect to (SMTP)."""
    return SMTP_DIALECT.port(host)


def host_label(host: message_pb2.RouteHost) -> str:
    """`name[address]:port`, the way Postfix names a peer in logs and diagnostics (SMTP)."""
    return SMTP_DIALECT.label(host)


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


class _DeadlineSMTP(SMTP):
    """aiosmtplib's client whose default command timeout (`timeout`) is cut to the attempt's time left."""

    def __init__(self, clamp: Callable[[float], float], **kwargs: Any) -> None:
        self._clamp = clamp
        self._command_timeout: float | None = None
        super().__init__(**kwargs)

    @property
    def timeout(self) -> float | None:
        return None if self._command_timeout is None else self._clamp(self._command_timeout)

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._command_timeout = value


class SmtpConnection:
    """One connection to one host: connect, greeting, EHLO and STARTTLS, then any number of transactions."""

    def __init__(
        self,
        host: message_pb2.RouteHost,
        job: message_pb2.DeliveryJob,
        options: SmtpOptions,
        *,
        starttls: bool,
        dialect: Dialect = SMTP_DIALECT,
    ) -> None:
        self._host = host
        self.dialect = dialect
        self._job = job  # the job being delivered now (for logs); the route's TLS policy is part of the cache key
        self._options = options
        self._starttls = starttls
        self._label = dialect.label(host)
        self._remote_mta = dialect.remote_mta(host)
        self.stage = "connecting"
        self.tls = False
        self.greeted = False  # the server's 220 greeting came (attempt_limits: the session limit)
        self.transactions = 0
        # A reused session's RSET, left to go out in front of its next pipelined group (transaction.py).
        self.reset_due = False
        self._connection_counted = False
        self._deadline: AttemptDeadline | None = None
        self._watch(options.deadline)
        where: dict[str, Any] = (
            {"socket_path": host.unix_socket}
            if host.unix_socket
            else {"hostname": host.address, "port": dialect.port(host)}
        )
        self.smtp = _DeadlineSMTP(
            lambda seconds: self._options.clamp(seconds),
            **where,
            local_hostname=options.ehlo_name,
            timeout=options.command_timeout,
            start_tls=False,
            validate_certs=False,
            tls_context=options.tls_context,
        )

    @property
    def label(self) -> str:
        """`name[address]:port` of the host."""
        return self._label

    @property
    def remote_mta(self) -> str:
        """The host's name for results (RFC 3464 Remote-MTA)."""
        return self._remote_mta

    def tls_session(self) -> tuple[str, str]:
        """The TLS version and cipher of the session, ("", "") when it is not encrypted or they are unknown."""
        if not self.tls:
            return "", ""
        try:
            cipher = self.smtp.get_transport_info("cipher")
        except SMTPException:  # the connection is gone
            return "", ""
        if not isinstance(cipher, tuple) or len(cipher) < 2:
            return "", ""
        return str(cipher[1] or ""), str(cipher[0] or "")

    @property
    def is_connected(self) -> bool:
        """True while the TCP (or TLS) connection is up."""
        return self.smtp.is_connected

    def pipelines(self) -> bool:
        """Whether transactions on this session are pipelined (RFC 2920): the dialect and the options allow it
        and the server offered PIPELINING."""
        return self.dialect.pipelining and self._options.pipelining and self.smtp.supports_extension(PIPELINING)

    def bind(self, job: message_pb2.DeliveryJob, options: SmtpOptions | None = None) -> None:
        """Use this (cached) session for `job` (and its attempt's `options`) from now on."""
        self._job = job
        if options is not None:
            self._options = options
            self._watch(options.deadline)

    def _watch(self, deadline: AttemptDeadline | None) -> None:
        if self._deadline is not None:
            self._deadline.unwatch(self)
        self._deadline = deadline
        if deadline is not None:
            deadline.watch(self)

    def count(self, result: str) -> None:
        """Count this connection's set-up once, with how it ended (`kubemta_smtp_connections_total`)."""
        if not self._connection_counted and self.dialect.counted:
            self._connection_counted = True
            SMTP_CONNECTIONS.labels(result=result).inc()

    def _fail(self, diagnostic: str, status: str, smtp_code: int = 0, remote_mta: str = "") -> HostFailure:
        return HostFailure(diagnostic=diagnostic, status=status, smtp_code=smtp_code, remote_mta=remote_mta)

    def timed_out(self) -> HostFailure:
        """The failure of a conversation that timed out at the current stage."""
        return self._fail(
            f"conversation with {self._label} timed out while {self.stage}",
            STATUS_BAD_CONNECTION,
            remote_mta=self._remote_mta,
        )

    def lost(self, exc: BaseException) -> HostFailure:
        """The failure of a connection lost at the current stage."""
        return self._fail(
            f"lost connection with {self._label} while {self.stage}: {_describe(exc)}",
            STATUS_BAD_CONNECTION,
            remote_mta=self._remote_mta,
        )

    async def open(self) -> None:
        """Connect, read the greeting, EHLO, and upgrade to TLS when offered."""
        deadline = self._options.deadline
        if deadline is not None and deadline.passed:
            raise HostFailed(
                self._fail(f"connect to {self._label}: not tried, {deadline_text(deadline)}", STATUS_NO_ANSWER)
            )
        try:
            await self.smtp.connect(timeout=self._options.clamp(self._options.connect_timeout))
        except SMTPConnectTimeoutError as exc:
            self.count("timeout")
            raise HostFailed(self._fail(f"connect to {self._label}: {_timeout_text(exc)}", STATUS_NO_ANSWER)) from exc
        except SMTPConnectResponseError as exc:
            self.count("error")
            raise HostFailed(
                self._fail(
                    f"host {self._label} refused to talk to me: {reply_diagnostic(exc.code, exc.message)}",
                    _temporary_reply_status(exc.code, exc.message),
                    exc.code,
                    self._remote_mta,
                )
            ) from exc
        except SMTPConnectError as exc:
            refused = isinstance(exc.__cause__, ConnectionRefusedError)
            self.count("refused" if refused else "error")
            raise HostFailed(self._fail(f"connect to {self._label}: {_describe(exc)}", STATUS_NO_ANSWER)) from exc
        self.greeted = True
        await self._hello()
        if self.dialect.starttls:
            await self._upgrade()
        self.count("ok")

    async def _hello(self) -> None:
        """EHLO (LHLO), falling back to HELO when the server rejects EHLO with 5xx (RFC 5321 §3.2; RFC 2033
        §4.1: LMTP has no fallback)."""
        hello = self.dialect.hello
        self.stage = f"performing the {hello} handshake"
        try:
            if hello == "EHLO":
                await self.smtp.ehlo()
            else:
                await self._lhlo()
            return
        except SMTPHeloError as exc:
            if not (self.dialect.helo_fallback and 500 <= exc.code < 600 and self.smtp.is_connected):
                raise self.rejected(exc, hello) from exc
        self.stage = "performing the HELO handshake"
        try:
            await self.smtp.helo()
        except SMTPHeloError as exc:
            raise self.rejected(exc, "HELO") from exc

    async def _lhlo(self) -> None:
        """LHLO (RFC 2033 §4.1), kept as aiosmtplib keeps an EHLO reply (its extensions, AUTH methods)."""
        reply = await self.smtp.execute_command(b"LHLO", self._options.ehlo_name.encode("ascii"))
        if reply.code != SMTPStatus.completed:
            raise SMTPHeloError(reply.code, reply.message)
        self.smtp.last_ehlo_response = reply

    def rejected(self, exc: SMTPResponseException, command: str) -> HostFailed:
        """A host-level refusal of `command`, for the next host or a later attempt."""
        return HostFailed(
            self._fail(
                f"host {self._label} said: {reply_diagnostic(exc.code, exc.message)} (in reply to {command} command)",
                _temporary_reply_status(exc.code, exc.message),
                exc.code,
                self._remote_mta,
            )
        )

    async def _upgrade(self) -> None:
        """STARTTLS as the route's TLS policy asks (tls_negotiation), then AUTH to a relayhost (relay_auth)."""
        self.stage = "performing the STARTTLS handshake"
        credentials = self._options.relay_credentials
        route = session_route(self._job.route, self._host, credentials)  # verify, when it will authenticate
        tls_contexts = contexts(self._options.tls_context, self._options.verify_tls_context)
        outcome = await negotiate(self.smtp, route, self._host, tls_contexts, allowed=self._starttls, label=self._label)
        if outcome.handshake_failed:
            self.count("tls_failed")
        if outcome.fallback is not None:
            raise TlsFailed(outcome.fallback)
        self.tls = outcome.tls
        if outcome.tls:  # RFC 3207 §4.2: forget what the server said before TLS and say EHLO again.
            await self._hello()
        self.stage = "authenticating"
        failure = outcome.failure or await authenticate(
            self.smtp,
            route,
            self._host,
            credentials,
            tls=outcome.tls,
            verified=outcome.verified,
            label=self._label,
        )
        if failure is not None:
            raise HostFailed(self._fail(failure.diagnostic, failure.status, failure.smtp_code, self._remote_mta))

    async def reset(self) -> bool:
        """RSET before another transaction (RFC 5321 §4.1.1.5); False (and closed) when the session is gone."""
        self.reset_due = False
        if not self.smtp.is_connected:
            self.close()
            return False
        self.stage = "sending RSET"
        try:
            await self.smtp.rset()
        except (SMTPException, OSError):
            self.close()
            return False
        return True

    async def quit(self) -> None:
        """QUIT politely and close; its failure changes nothing (RFC 5321 §4.1.1.10). Never raises but cancellation."""
        try:
            if self.smtp.is_connected:
                self.stage = "sending QUIT"
                await self.smtp.quit(timeout=min(self._options.command_timeout, QUIT_TIMEOUT))
        except (SMTPException, OSError) as exc:
            logger.debug("QUIT to %s failed: %s", self._label, exc)
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection at once."""
        self.smtp.close()


def _timeout_text(exc: SMTPConnectTimeoutError) -> str:
    # aiosmtplib raises the same error for the TCP connect and for the greeting.
    return "Connection timed out" if "connecting" in exc.message else "timed out waiting for the server greeting"
