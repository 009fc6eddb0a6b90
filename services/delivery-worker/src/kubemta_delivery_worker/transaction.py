"""Mail transactions on SMTP sessions with one host of a route (aiosmtplib).

An `SmtpConnection` (connection.py) is one connected, greeted session. `attempt_host` runs one
transaction (MAIL, RCPT per recipient, DATA; pipelined per RFC 2920 when the server
offers PIPELINING, pipelining.py) for a job on a cached connection to the
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
from dataclasses import dataclass, field

from aiosmtplib import (
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import message_data
from kubemta_delivery_worker.connection import (
    STATUS_BAD_CONNECTION,
    HostFailed,
    HostFailure,
    SmtpConnection,
    SmtpOptions,
    TlsFailed,
    host_label,
    host_port,
)
from kubemta_delivery_worker.eight_bit import content_for_server
from kubemta_delivery_worker.mail_parameters import mail_from_parameters, screen_smtputf8
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS_REUSED
from kubemta_delivery_worker.pipelining import DATA_COMMAND, PIPELINING, START_MAIL_INPUT, PipelinedGroup, command_line
from kubemta_delivery_worker.pool import ConnectionKey, ConnectionPool
from kubemta_delivery_worker.relay_auth import needs_auth, session_route
from kubemta_delivery_worker.replies import local_result, reply_result
from kubemta_delivery_worker.size_limit import STATUS_TOO_BIG, size_refusal

# The session types callers of attempt_host use, at home in connection.py.
__all__ = ["HostAttempt", "HostFailure", "SmtpConnection", "SmtpOptions", "attempt_host", "connection_key"]

logger = logging.getLogger(__name__)

# RFC 6531 §3.5 / RFC 6533: 5.6.7 non-ASCII addresses not permitted for that recipient.
STATUS_SMTPUTF8_REQUIRED = "5.6.7"
# RFC 3463 §3.2: 5.1.3 bad destination mailbox address syntax, 5.1.7 bad sender's syntax.
STATUS_BAD_RECIPIENT_SYNTAX = "5.1.3"
STATUS_BAD_SENDER_SYNTAX = "5.1.7"


@dataclass(slots=True)
class HostAttempt:
    """What one host did: final results for the recipients it answered, and why it did not answer the rest."""

    results: dict[str, message_pb2.RecipientResult] = field(default_factory=dict)
    failure: HostFailure | None = None
    tls: bool = False
    greeted: bool = False  # a session got the server's greeting (attempt_limits: smtp_mx_session_limit)


def connection_key(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, options: SmtpOptions | None = None
) -> ConnectionKey:
    """The idle-cache key of a session with `host` for `job`: address, port, the TLS policy the session
    uses (relay_auth.session_route: verify before AUTH), the name a verified or authenticated session's
    certificate was presented for, and the user name it authenticates as."""
    credentials = options.relay_credentials if options is not None else None
    route = session_route(job.route, host, credentials)
    authenticates = credentials is not None and needs_auth(route, credentials)
    named = authenticates or route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    return ConnectionKey(
        address=host.address,
        port=host_port(host),
        tls_policy=int(route.tls_policy),
        server_name=host.hostname.rstrip(".").lower() if named else "",
        identity=credentials.username if credentials is not None and authenticates else "",
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
        connection = await _cached(pool, key, job, options)
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
    except TlsFailed as exc:
        logger.warning(
            "TLS handshake with %s failed (%s); delivering in plaintext",
            host_label(host),
            exc,
            extra={"queue_id": job.queue_id, "host": host_label(host)},
        )
        connection, transaction, attempt = await _fresh(host, job, recipients, options, starttls=False)
    return await _finish(connection, transaction, attempt, pool, key)


async def _cached(
    pool: ConnectionPool["SmtpConnection"], key: ConnectionKey, job: message_pb2.DeliveryJob, options: SmtpOptions
) -> "SmtpConnection | None":
    """An idle session for `key` that answered RSET, or None; dead ones are dropped."""
    while (connection := pool.take(key)) is not None:
        connection.bind(job, options)
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
    """A new session: open it, then run the transaction; raises TlsFailed for a failed handshake."""
    connection = SmtpConnection(host, job, options, starttls=starttls)
    transaction = _Transaction(connection, job, recipients, options)
    try:
        await connection.open()
    except HostFailed as exc:
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
    except BaseException:  # TlsFailed, cancellation
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
    attempt.greeted = connection.greeted
    if pool is not None and pool.enabled and transaction.clean and connection.is_connected:
        pool.put(key, connection)
    else:
        await connection.quit()
    return attempt


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
        except HostFailed as exc:
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

    async def _not_convertible(self) -> bool:
        """RFC 6152 §3: 8-bit content to a server without 8BITMIME is made 7-bit (eight_bit.py), or bounced 5.6.3."""
        prepared = await content_for_server(self._content, self._smtp.esmtp_extensions, self._label, self._job.queue_id)
        self._content = prepared.content
        self._attempt.results.update(prepared.bounces(self._recipients, self._remote_mta))
        return prepared.refusal is not None

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
        """MAIL, RCPT per recipient, DATA when any was accepted; pipelined when the server offers it."""
        if await self._not_convertible() or self._too_big():
            return
        recipients, smtputf8 = self._smtputf8_screen()
        if not recipients:
            return
        if self._options.pipelining and self._smtp.supports_extension(PIPELINING):
            await self._pipelined(recipients, smtputf8)
        elif await self._mail(recipients, smtputf8):
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
            self._sender_refused(recipients, exc)
            return False
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            self._bad_sender(recipients, exc)
            return False
        return True

    def _sender_refused(self, recipients: list[str], exc: SMTPSenderRefused) -> None:
        """MAIL FROM 5xx answers every recipient; anything else is the host's failure."""
        if 500 <= exc.code < 600:
            for rcpt in recipients:
                self._attempt.results[rcpt] = reply_result(rcpt, exc.code, exc.message, self._remote_mta)
        else:
            self._attempt.failure = self._connection.rejected(exc, "MAIL FROM").failure

    def _bad_sender(self, recipients: list[str], exc: ValueError) -> None:
        for rcpt in recipients:
            self._attempt.results[rcpt] = local_result(
                rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_SENDER_SYNTAX, f"bad sender address: {exc}"
            )

    def _bad_recipient(self, rcpt: str, exc: ValueError) -> None:
        self._attempt.results[rcpt] = local_result(
            rcpt, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_RECIPIENT_SYNTAX, f"bad recipient address: {exc}"
        )

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
                self._bad_recipient(rcpt, exc)
            else:
                accepted.append(rcpt)
        return accepted

    async def _pipelined(self, recipients: list[str], smtputf8: bool) -> None:
        """MAIL, every RCPT and DATA in one write (RFC 2920 §3.1); replies mapped as `_mail`, `_rcpt`, `_data` do."""
        encoding = "utf-8" if smtputf8 else "ascii"
        options = self._mail_options(self._content, smtputf8)
        try:
            mail = command_line(b"MAIL FROM:", self._job.sender, options, encoding)
        except ValueError as exc:
            self._bad_sender(recipients, exc)
            return
        lines: dict[str, bytes | ValueError] = {}
        for rcpt in recipients:
            try:
                lines[rcpt] = command_line(b"RCPT TO:", rcpt, (), encoding)
            except ValueError as exc:  # left out of the group; its result once MAIL FROM is accepted
                lines[rcpt] = exc
        group = [line for line in lines.values() if isinstance(line, bytes)]
        if not group:  # nothing to pipeline: MAIL FROM alone, as without PIPELINING
            if await self._mail(recipients, smtputf8):
                await self._rcpt(recipients, encoding)
            return
        self._connection.stage = "sending MAIL FROM/RCPT TO/DATA (pipelined)"
        timeouts = {  # cut to the attempt's time left (the attempt's watchdog bounds the whole group)
            "timeout": self._options.clamp(self._options.command_timeout),
            "data_timeout": self._options.clamp(self._options.data_timeout),
        }
        async with PipelinedGroup(self._smtp, [mail, *group, DATA_COMMAND], **timeouts) as replies:
            accepted = await self._pipelined_replies(replies, lines)
        if accepted:
            await self._send_content(accepted)

    async def _pipelined_replies(self, replies: PipelinedGroup, lines: dict[str, bytes | ValueError]) -> list[str]:
        """The group's replies in order; the recipients to send the content to (DATA got 354)."""
        self._connection.stage = "sending MAIL FROM (pipelined)"
        reply = await replies.reply()
        if reply.code != SMTPStatus.completed:
            self._sender_refused(list(lines), SMTPSenderRefused(reply.code, reply.message, self._job.sender))
            await replies.drain()
            return []
        self._connection.stage = "sending RCPT TO (pipelined)"
        accepted: list[str] = []
        for rcpt, line in lines.items():
            if isinstance(line, ValueError):
                self._bad_recipient(rcpt, line)
            elif (reply := await replies.reply()).code in (SMTPStatus.completed, SMTPStatus.will_forward):
                accepted.append(rcpt)
            else:
                self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.message, self._remote_mta)
        self._connection.stage = "sending DATA command (pipelined)"
        if not accepted:
            await replies.drain()  # RFC 2920 §3.1: a 354 to this DATA still wants its single dot
            return []
        reply = await replies.reply()
        if reply.code != START_MAIL_INPUT:
            self._data_refused(accepted, reply)
            return []
        return accepted

    async def _data(self, accepted: list[str]) -> None:
        """DATA, the content, and the reply to the final dot, which applies to every accepted recipient."""
        self._connection.stage = "sending DATA command"
        reply = await self._smtp.execute_command(b"DATA")
        if reply.code != START_MAIL_INPUT:
            self._data_refused(accepted, reply)
            return
        await self._send_content(accepted)

    def _data_refused(self, accepted: list[str], reply: SMTPResponse) -> None:
        # Anything but 354 refuses the data; a stray 2xx must not count as delivered.
        outcome = message_pb2.OUTCOME_PERMANENT if 500 <= reply.code < 600 else message_pb2.OUTCOME_TEMPORARY
        for rcpt in accepted:
            self._attempt.results[rcpt] = reply_result(
                rcpt, reply.code, reply.message, self._remote_mta, outcome=outcome
            )

    async def _send_content(self, accepted: list[str]) -> None:
        """The content after a 354, and the reply to the final dot, which applies to every accepted recipient."""
        protocol = self._smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        self._connection.stage = "sending message body"
        if self._options.expired():  # no final dot after the attempt's deadline: deferred, never a duplicate
            self._smtp.close()
            raise SMTPTimeoutError("the delivery attempt's deadline has passed")
        # Sent through the protocol directly (aiosmtplib's data() cannot tell whether the
        # connection died before or after the final dot, and only the latter risks a duplicate).
        protocol.write(message_data.wire_data(self._content))
        try:
            reply = await protocol.read_response(timeout=self._options.clamp(self._options.data_timeout))
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
