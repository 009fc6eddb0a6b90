"""SMTP sessions with one host of a route (aiosmtplib), and the mail transactions they carry.

An `SmtpConnection` is one connected, greeted session: connect, EHLO, opportunistic
STARTTLS (its `_upgrade` step), then ready for mail transactions. `attempt_host` runs one
transaction (MAIL, RCPT per recipient, DATA) for a job on a cached connection to the
same host, reset with RSET first (RFC 5321 §4.1.1.5), or on a new one; afterwards a
connection in a clean state goes back to the idle cache (pool.py), any other says QUIT
and closes. A cached connection that turns out dead is dropped and a new one made,
without failing the job.

The outcome is a final result for each recipient the host answered, and, for the
recipients it did not answer (connection refused, timed out or lost, MAIL FROM 4xx),
a `HostFailure` telling the deliverer to try the next host. A connection lost after
the final dot was sent is the one case where a recipient is neither delivered nor
retried elsewhere now: the host may have taken the message (RFC 5321 §6.1 asks the
client to treat the message as undelivered, so a duplicate is possible).

Cancellation (the drain deadline) closes the connection wherever it happens; it is
never given back to the cache, and no result leaves this module.
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
from kubemta_delivery_worker.mail_parameters import mail_from_parameters, screen_smtputf8
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS, SMTP_CONNECTIONS_REUSED
from kubemta_delivery_worker.pool import ConnectionKey, ConnectionPool
from kubemta_delivery_worker.relay_auth import RelayCredentials, authenticate, needs_auth
from kubemta_delivery_worker.replies import enhanced_status, local_result, reply_diagnostic, reply_result
from kubemta_delivery_worker.size_limit import STATUS_TOO_BIG, size_refusal
from kubemta_delivery_worker.tls_negotiation import contexts, negotiate

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
# Postfix smtp_quit_timeout is 300s; a QUIT to a session we are done with is not worth waiting long for.
QUIT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """How the worker speaks SMTP: its EHLO name, TLS context and timeouts (seconds)."""

    ehlo_name: str
    tls_context: ssl.SSLContext
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    # TLS policy verify / MTA-STS (None: the system's CAs), and relayhost AUTH (None: no AUTH).
    verify_tls_context: ssl.SSLContext | None = None
    relay_credentials: RelayCredentials | None = None


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


def connection_key(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, options: SmtpOptions | None = None
) -> ConnectionKey:
    """The idle-cache key of a session with `host` for `job`: address, port, the route's TLS policy,
    the name a verified certificate was checked against, and the user name it authenticates as."""
    credentials = options.relay_credentials if options is not None else None
    return ConnectionKey(
        address=host.address,
        port=host_port(host),
        tls_policy=int(job.route.tls_policy),
        server_name=host.hostname.rstrip(".").lower() if job.route.tls_policy == message_pb2.TLS_POLICY_VERIFY else "",
        identity=credentials.username if credentials is not None and needs_auth(job.route, credentials) else "",
    )


async def attempt_host(
    host: message_pb2.RouteHost,
    job: message_pb2.DeliveryJob,
    recipients: list[str],
    options: SmtpOptions,
    pool: ConnectionPool["SmtpConnection"] | None = None,
) -> HostAttempt:
    """Deliver `job` to `recipients` through `host`, on a cached session when `pool` has one.

    A failed TLS handshake is retried in plaintext; a cached session found dead (at RSET,
    or lost before any recipient was answered) is replaced by a new one.
    """
    key = connection_key(host, job, options)
    if pool is not None:
        connection = await _cached(pool, key, job)
        if connection is not None:
            transaction = _Transaction(connection, job, recipients, options)
            attempt = await _run(connection, transaction)
            if not (transaction.lost and not attempt.results):
                return await _finish(connection, transaction, attempt, pool, key)
            logger.info(
                "cached connection to %s was lost (%s); retrying on a new connection",
                connection.label,
                attempt.failure.diagnostic if attempt.failure else "",
                extra={"queue_id": job.queue_id, "host": connection.label},
            )
    try:
        connection, transaction, attempt = await _fresh(host, job, recipients, options, starttls=True)
    except _TlsFailed as exc:
        logger.warning(
            "TLS handshake with %s failed (%s); delivering in plaintext",
            host_label(host),
            exc,
            extra={"queue_id": job.queue_id, "host": host_label(host)},
        )
        connection, transaction, attempt = await _fresh(host, job, recipients, options, starttls=False)
    return await _finish(connection, transaction, attempt, pool, key)


async def _cached(
    pool: ConnectionPool["SmtpConnection"], key: ConnectionKey, job: message_pb2.DeliveryJob
) -> "SmtpConnection | None":
    """An idle session for `key` that answered RSET, or None; dead ones are dropped."""
    while (connection := pool.take(key)) is not None:
        connection.bind(job)
        try:
            usable = await connection.reset()
        except BaseException:  # cancelled during RSET
            connection.close()
            raise
        if usable:
            SMTP_CONNECTIONS_REUSED.inc()
            return connection
        logger.debug(
            "cached connection to %s no longer usable; dropped",
            connection.label,
            extra={"queue_id": job.queue_id, "host": connection.label},
        )
    return None


async def _fresh(
    host: message_pb2.RouteHost,
    job: message_pb2.DeliveryJob,
    recipients: list[str],
    options: SmtpOptions,
    *,
    starttls: bool,
) -> "tuple[SmtpConnection, _Transaction, HostAttempt]":
    """A new session: open it, then run the transaction; raises _TlsFailed for a failed handshake."""
    connection = SmtpConnection(host, job, options, starttls=starttls)
    transaction = _Transaction(connection, job, recipients, options)
    try:
        await connection.open()
    except _HostFailed as exc:
        connection.close()
        return connection, transaction, HostAttempt(failure=exc.failure)
    except SMTPTimeoutError:
        connection.count("timeout")
        connection.close()
        return connection, transaction, HostAttempt(failure=connection.timed_out())
    except (SMTPException, OSError) as exc:
        connection.count("error")
        connection.close()
        return connection, transaction, HostAttempt(failure=connection.lost(exc))
    except BaseException:  # _TlsFailed, cancellation
        connection.count("error")
        connection.close()
        raise
    return connection, transaction, await _run(connection, transaction)


async def _run(connection: "SmtpConnection", transaction: "_Transaction") -> HostAttempt:
    try:
        return await transaction.run()
    except BaseException:  # cancelled mid-transaction: the session's state is unknown
        connection.close()
        raise


async def _finish(
    connection: "SmtpConnection",
    transaction: "_Transaction",
    attempt: HostAttempt,
    pool: ConnectionPool["SmtpConnection"] | None,
    key: ConnectionKey,
) -> HostAttempt:
    """Give a clean session to the idle cache, or QUIT it."""
    attempt.tls = connection.tls
    if pool is not None and pool.enabled and transaction.clean and connection.is_connected:
        pool.put(key, connection)
    else:
        await connection.quit()
    return attempt


class SmtpConnection:
    """One connection to one host: connect, greeting, EHLO and STARTTLS, then any number of transactions."""

    def __init__(
        self,
        host: message_pb2.RouteHost,
        job: message_pb2.DeliveryJob,
        options: SmtpOptions,
        *,
        starttls: bool,
    ) -> None:
        self._host = host
        self._job = job  # the job being delivered now (for logs); the route's TLS policy is part of the cache key
        self._options = options
        self._starttls = starttls
        self._label = host_label(host)
        self._remote_mta = host.hostname.rstrip(".") or host.address
        self.stage = "connecting"
        self.tls = False
        self.transactions = 0
        self._connection_counted = False
        self.smtp = SMTP(
            hostname=host.address,
            port=host_port(host),
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

    @property
    def is_connected(self) -> bool:
        """True while the TCP (or TLS) connection is up."""
        return self.smtp.is_connected

    def bind(self, job: message_pb2.DeliveryJob) -> None:
        """Use this (cached) session for `job` from now on."""
        self._job = job

    def count(self, result: str) -> None:
        """Count this connection's set-up once, with how it ended (`kubemta_smtp_connections_total`)."""
        if not self._connection_counted:
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
        try:
            await self.smtp.connect(timeout=self._options.connect_timeout)
        except SMTPConnectTimeoutError as exc:
            self.count("timeout")
            raise _HostFailed(self._fail(f"connect to {self._label}: {_timeout_text(exc)}", STATUS_NO_ANSWER)) from exc
        except SMTPConnectResponseError as exc:
            self.count("error")
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
            self.count("refused" if refused else "error")
            raise _HostFailed(self._fail(f"connect to {self._label}: {_describe(exc)}", STATUS_NO_ANSWER)) from exc
        await self._hello()
        await self._upgrade()
        self.count("ok")

    async def _hello(self) -> None:
        """EHLO, falling back to HELO when the server rejects EHLO with 5xx (RFC 5321 §3.2)."""
        self.stage = "performing the EHLO handshake"
        try:
            await self.smtp.ehlo()
            return
        except SMTPHeloError as exc:
            if not (500 <= exc.code < 600 and self.smtp.is_connected):
                raise self.rejected(exc, "EHLO") from exc
        self.stage = "performing the HELO handshake"
        try:
            await self.smtp.helo()
        except SMTPHeloError as exc:
            raise self.rejected(exc, "HELO") from exc

    def rejected(self, exc: SMTPResponseException, command: str) -> _HostFailed:
        """A host-level refusal of `command`, for the next host or a later attempt."""
        return _HostFailed(
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
        route, queue_id = self._job.route, self._job.queue_id
        tls_contexts = contexts(self._options.tls_context, self._options.verify_tls_context)
        outcome = await negotiate(
            self.smtp, route, self._host, tls_contexts, allowed=self._starttls, label=self._label, queue_id=queue_id
        )
        if outcome.handshake_failed:
            self.count("tls_failed")
        if outcome.fallback is not None:
            raise _TlsFailed(outcome.fallback)
        self.tls = outcome.tls
        if outcome.tls:  # RFC 3207 §4.2: forget what the server said before TLS and say EHLO again.
            await self._hello()
        self.stage = "authenticating"
        failure = outcome.failure or await authenticate(
            self.smtp, route, self._options.relay_credentials, tls=self.tls, label=self._label, queue_id=queue_id
        )
        if failure is not None:
            raise _HostFailed(self._fail(failure.diagnostic, failure.status, failure.smtp_code, self._remote_mta))

    async def reset(self) -> bool:
        """RSET before another transaction (RFC 5321 §4.1.1.5); False (and closed) when the session is gone."""
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
            logger.debug("QUIT to %s failed: %s", self._label, exc, extra={"queue_id": self._job.queue_id})
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection at once."""
        self.smtp.close()


class _Transaction:
    """One mail transaction on an open session; `run()` never raises for SMTP or network failures.

    Afterwards `clean` tells whether the session may carry another transaction (every
    command got its reply), `lost` whether the connection failed under it.
    """

    def __init__(
        self, connection: SmtpConnection, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
    ) -> None:
        self._connection = connection
        self._smtp = connection.smtp
        self._job = job
        self._content = message_data.normalize_line_endings(job.content)  # once per attempt: SIZE, MAIL, DATA
        self._recipients = recipients
        self._options = options
        self._label = connection.label
        self._remote_mta = connection.remote_mta
        self._attempt = HostAttempt()
        self.clean = False
        self.lost = False

    async def run(self) -> HostAttempt:
        try:
            await self._transaction()
            self.clean = self._smtp.is_connected
            self._connection.transactions += 1
        except _HostFailed as exc:
            self._attempt.failure = exc.failure
            self.clean = self._smtp.is_connected
        except SMTPTimeoutError:
            self._attempt.failure = self._connection.timed_out()
        except (SMTPException, OSError) as exc:
            self.lost = True
            self._attempt.failure = self._connection.lost(exc)
        return self._attempt

    def _too_big(self) -> bool:
        """RFC 1870 §6: a message over the server's SIZE is bounced (5.3.4) for all, without MAIL FROM."""
        size = len(self._content)
        diagnostic = size_refusal(self._smtp.esmtp_extensions, size, self._label)
        for rcpt in self._recipients if diagnostic else ():
            self._attempt.results[rcpt] = local_result(
                rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_TOO_BIG, diagnostic or "", remote_mta=self._remote_mta
            )
        return diagnostic is not None

    def _smtputf8_screen(self) -> tuple[list[str], bool]:
        """Recipients to send to, and whether to use SMTPUTF8 (RFC 6531 §3.4); records 5.6.7 for the rest."""
        screen = screen_smtputf8(self._job, self._recipients, self._smtp.supports_extension("smtputf8"))
        diagnostic = f"SMTPUTF8 is required, but was not offered by host {self._label}"
        for rcpt in screen.refused:
            self._attempt.results[rcpt] = local_result(
                rcpt,
                message_pb2.OUTCOME_PERMANENT,
                STATUS_SMTPUTF8_REQUIRED,
                diagnostic,
                remote_mta=self._remote_mta,
            )
        return screen.send, screen.smtputf8

    def _mail_options(self, content: bytes, smtputf8: bool) -> list[str]:
        return mail_from_parameters(self._smtp.esmtp_extensions, content, smtputf8)

    async def _transaction(self) -> None:
        """MAIL, RCPT per recipient, DATA when any was accepted."""
        if self._too_big():
            return
        recipients, smtputf8 = self._smtputf8_screen()
        if recipients and await self._mail(recipients, smtputf8):
            accepted = await self._rcpt(recipients, "utf-8" if smtputf8 else "ascii")
            if accepted:
                await self._data(accepted)

    async def _mail(self, recipients: list[str], smtputf8: bool) -> bool:
        """MAIL FROM; False when the transaction cannot go on (recipients answered or host failure)."""
        self._connection.stage = "sending MAIL FROM"
        content = self._content
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
                self._attempt.failure = self._connection.rejected(exc, "MAIL FROM").failure
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
        self._connection.stage = "sending RCPT TO"
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
        self._connection.stage = "sending DATA command"
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
        self._connection.stage = "sending message body"
        # Sent through the protocol directly (aiosmtplib's data() cannot tell whether the
        # connection died before or after the final dot, and only the latter risks a duplicate).
        protocol.write(message_data.wire_data(self._content))
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


def _timeout_text(exc: SMTPConnectTimeoutError) -> str:
    # aiosmtplib raises the same error for the TCP connect and for the greeting.
    return "Connection timed out" if "connecting" in exc.message else "timed out waiting for the server greeting"
