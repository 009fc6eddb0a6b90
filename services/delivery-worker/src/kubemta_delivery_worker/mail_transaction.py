"""One mail transaction on an open session (connection.py), in the session's dialect (dialect.py).

MAIL FROM, RCPT TO per recipient, DATA when any was accepted; pipelined (RFC 2920)
when the dialect allows it and the server offers PIPELINING, with the group's replies
read by wire.py, which also reads the replies after the final dot: one for every
accepted recipient (SMTP), or one for each (LMTP, RFC 2033 §4.2).

Before MAIL FROM: 8-bit content to a server without 8BITMIME is made 7-bit or bounced
(eight_bit.py), a message over the server's SIZE is bounced (size_limit.py), and
recipients that need SMTPUTF8 are bounced when the server lacks it (mail_parameters.py).
The client's DSN parameters (RFC 3461) go on MAIL FROM and RCPT TO when the server offered
DSN (mail_parameters.py), and every recipient the server took is stamped with how it left
kubemta (handoff.py): delivered (LMTP), handed on with the DSN parameters, or relayed.

A connection lost (or a reply timed out) after the final dot was sent leaves the
recipients without a reply neither delivered nor retried elsewhere now: the host may
have taken the message (RFC 5321 §6.1 asks the client to treat the message as
undelivered, so a duplicate is possible).
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiosmtplib import (
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPSenderRefused,
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
)
from kubemta_delivery_worker.eight_bit import content_for_server
from kubemta_delivery_worker.handoff import handoff_for, stamp_delivered
from kubemta_delivery_worker.mail_parameters import (
    DSN,
    dsn_mail_parameters,
    dsn_rcpt_parameters,
    mail_from_parameters,
    screen_smtputf8,
)
from kubemta_delivery_worker.metrics import SMTP_CONNECTIONS_REUSED
from kubemta_delivery_worker.replies import local_result, reply_result
from kubemta_delivery_worker.size_limit import STATUS_TOO_BIG, size_refusal
from kubemta_delivery_worker.smtp_options import SmtpOptions
from kubemta_delivery_worker.wire import (
    DATA_COMMAND,
    RSET_COMMAND,
    START_MAIL_INPUT,
    ReplyGroup,
    command_line,
    message_group,
)

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
    tls_version: str = ""  # "TLSv1.3", when the session was encrypted
    tls_cipher: str = ""
    greeted: bool = False  # a session got the server's greeting (attempt_limits: smtp_mx_session_limit)


class StaleSession(Exception):
    """A reused session refused (or never answered) the RSET in front of the transaction: it is closed."""


class MailTransaction:
    """One mail transaction on an open session; `run()` never raises for SMTP or network failures.

    Afterwards `clean` tells whether the session may carry another transaction (every
    command got its reply), `lost` whether the connection failed under it, `stale` whether
    it was a reused session that failed the RSET it still owed (transaction.py replaces it).
    """

    def __init__(
        self, connection: SmtpConnection, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
    ) -> None:
        self._connection = connection
        self._dialect = connection.dialect
        self._smtp = connection.smtp
        self._job = job
        self._content = message_data.normalize_line_endings(job.content)  # once per attempt: SIZE, MAIL, DATA
        self._recipients = recipients
        self._options = options
        self._label = connection.label
        self._remote_mta = connection.remote_mta
        self._attempt = HostAttempt()
        self._dsn_offered = False  # RFC 3461: the server's EHLO/LHLO named DSN (read when the transaction starts)
        self.clean = False
        self.lost = False
        self.stale = False

    async def run(self) -> HostAttempt:
        try:
            await self._transaction()
            self.clean = self._smtp.is_connected
            self._connection.transactions += 1
        except StaleSession as exc:
            self._smtp.close()
            self.stale = True
            self._attempt.failure = self._connection.lost(exc)
        except HostFailed as exc:
            self._attempt.failure = exc.failure
            self.clean = self._smtp.is_connected
        except SMTPTimeoutError:
            self._attempt.failure = self._connection.timed_out()
        except (SMTPException, OSError) as exc:
            self.lost = True
            self._attempt.failure = self._connection.lost(exc)
        stamp_delivered(self._attempt.results.values(), handoff_for(self._dialect.final_delivery, self._dsn_offered))
        return self._attempt

    def _too_big(self) -> bool:
        """RFC 1870 §6: a message over the server's SIZE is bounced (5.3.4) for all, without MAIL FROM."""
        size = len(self._content)
        diagnostic = size_refusal(self._smtp.esmtp_extensions, size, self._label)
        if diagnostic is not None:
            self._decide(self._recipients, message_pb2.OUTCOME_PERMANENT, STATUS_TOO_BIG, diagnostic, self._remote_mta)
        return diagnostic is not None

    async def _not_convertible(self) -> bool:
        """RFC 6152 §3: 8-bit content to a server without 8BITMIME is made 7-bit (eight_bit.py), or bounced 5.6.3."""
        prepared = await content_for_server(self._content, self._smtp.esmtp_extensions, self._label)
        self._content = prepared.content
        self._attempt.results.update(prepared.bounces(self._recipients, self._remote_mta))
        return prepared.refusal is not None

    def _smtputf8_screen(self) -> tuple[list[str], bool]:
        """Recipients to send to, and whether to use SMTPUTF8 (RFC 6531 §3.4); records 5.6.7 for the rest."""
        screen = screen_smtputf8(self._job, self._recipients, self._smtp.supports_extension("smtputf8"))
        diagnostic = f"SMTPUTF8 is required, but was not offered by host {self._label}"
        self._decide(
            screen.refused, message_pb2.OUTCOME_PERMANENT, STATUS_SMTPUTF8_REQUIRED, diagnostic, self._remote_mta
        )
        return screen.send, screen.smtputf8

    def _mail_options(self, content: bytes, smtputf8: bool) -> list[str]:
        return [
            *mail_from_parameters(self._smtp.esmtp_extensions, content, smtputf8),
            *dsn_mail_parameters(self._job, self._dsn_offered),
        ]

    def _rcpt_options(self, rcpt: str) -> list[str]:
        return dsn_rcpt_parameters(self._job, rcpt, self._dsn_offered)

    async def _transaction(self) -> None:
        """MAIL, RCPT per recipient, DATA when any was accepted; pipelined when the server offers it."""
        self._dsn_offered = self._smtp.supports_extension(DSN)
        if await self._not_convertible() or self._too_big():
            return
        recipients, smtputf8 = self._smtputf8_screen()
        if not recipients:
            return
        if self._connection.pipelines():
            await self._pipelined(recipients, smtputf8)
        elif await self._mail(recipients, smtputf8):
            accepted = await self._rcpt(recipients, "utf-8" if smtputf8 else "ascii")
            if accepted:
                await self._data(accepted)
            else:
                await self._refused()

    async def _mail(self, recipients: list[str], smtputf8: bool) -> bool:
        """MAIL FROM; False when the transaction cannot go on (recipients answered or host failure)."""
        if self._connection.reset_due and not await self._connection.reset():
            raise StaleSession("the reused session failed RSET")
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
            if 500 <= exc.code < 600:
                await self._refused()
            return False
        except ValueError as exc:  # an address aiosmtplib will not put on a command line
            self._bad_sender(recipients, exc)
            return False
        return True

    async def _refused(self) -> None:
        """The transaction ended before DATA: RSET it where the dialect asks (LMTP; SMTP resets before reuse)."""
        if self._dialect.reset_after_refusal:
            await self._connection.reset()

    def _sender_refused(self, recipients: list[str], exc: SMTPSenderRefused) -> None:
        """MAIL FROM 5xx answers every recipient; anything else is the host's failure."""
        if 500 <= exc.code < 600:
            for rcpt in recipients:
                self._attempt.results[rcpt] = reply_result(rcpt, exc.code, exc.message, self._remote_mta)
        else:
            self._attempt.failure = self._connection.rejected(exc, "MAIL FROM").failure

    def _decide(
        self,
        recipients: Iterable[str],
        outcome: message_pb2.Outcome.ValueType,
        status: str,
        diagnostic: str,
        remote_mta: str = "",
    ) -> None:
        """Record one result decided here, without a reply of the server to it, for each of `recipients`."""
        for rcpt in recipients:
            self._attempt.results[rcpt] = local_result(rcpt, outcome, status, diagnostic, remote_mta=remote_mta)

    def _bad_sender(self, recipients: list[str], exc: ValueError) -> None:
        self._decide(recipients, message_pb2.OUTCOME_PERMANENT, STATUS_BAD_SENDER_SYNTAX, f"bad sender address: {exc}")

    def _bad_recipient(self, rcpt: str, exc: ValueError) -> None:
        self._decide(
            [rcpt], message_pb2.OUTCOME_PERMANENT, STATUS_BAD_RECIPIENT_SYNTAX, f"bad recipient address: {exc}"
        )

    async def _rcpt(self, recipients: list[str], encoding: str) -> list[str]:
        """RCPT TO for each recipient; returns the accepted ones, records the refused ones."""
        self._connection.stage = "sending RCPT TO"
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                await self._smtp.rcpt(rcpt, options=self._rcpt_options(rcpt), encoding=encoding)
            except SMTPRecipientRefused as exc:
                if rcpt_accepted(exc.code):  # aiosmtplib takes only 250/251: a 252 is an acceptance too
                    accepted.append(rcpt)
                else:
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
                lines[rcpt] = command_line(b"RCPT TO:", rcpt, self._rcpt_options(rcpt), encoding)
            except ValueError as exc:  # left out of the group; its result once MAIL FROM is accepted
                lines[rcpt] = exc
        group = [line for line in lines.values() if isinstance(line, bytes)]
        if not group:  # nothing to pipeline: MAIL FROM alone, as without PIPELINING
            if await self._mail(recipients, smtputf8):
                await self._rcpt(recipients, encoding)
            return
        self._connection.stage = "sending MAIL FROM/RCPT TO/DATA (pipelined)"
        # Timeouts cut to the attempt's time left (the attempt's watchdog bounds the whole group).
        timeout = self._options.clamp(self._options.command_timeout)
        data_timeout = self._options.clamp(self._options.data_timeout)
        commands = [mail, *group, DATA_COMMAND]
        reset = self._connection.reset_due
        if reset:  # RFC 5321 §4.1.1.5 before the reused session's next transaction; RFC 2920 §3.1 lets it lead
            self._connection.reset_due = False
            commands.insert(0, RSET_COMMAND)
        async with ReplyGroup(self._smtp, commands, timeout=timeout, data_timeout=data_timeout) as replies:
            if reset:
                await self._reset_reply(replies)
            accepted = await self._pipelined_replies(replies, lines)
        if accepted:
            await self._send_content(accepted)

    async def _reset_reply(self, replies: ReplyGroup) -> None:
        """The reply to the RSET leading the group: anything but 250 (or none) closes the session unused.

        Closing before the final dot is safe whatever the server made of the rest of the
        group: no message is delivered without its final dot.
        """
        self._connection.stage = "sending RSET (pipelined)"
        try:
            reply = await replies.reply()
        except (SMTPException, OSError) as exc:
            raise StaleSession(f"the reused session failed RSET: {exc}") from exc
        if reply.code != SMTPStatus.completed:
            raise StaleSession(f"the reused session failed RSET: {reply.code} {reply.message}")
        SMTP_CONNECTIONS_REUSED.inc()

    async def _pipelined_replies(self, replies: ReplyGroup, lines: dict[str, bytes | ValueError]) -> list[str]:
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
            elif rcpt_accepted((reply := await replies.reply()).code):
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
        """The content after a 354, and the replies to the final dot: one for all (SMTP), one each (LMTP)."""
        self._connection.stage = "sending message body"
        if self._options.expired():  # no final dot after the attempt's deadline: deferred, never a duplicate
            self._smtp.close()
            raise SMTPTimeoutError("the delivery attempt's deadline has passed")
        # Written and read by wire.py (aiosmtplib's data() cannot tell whether the connection
        # died before or after the final dot, and only the latter risks a duplicate).
        batches = self._dialect.data_replies(accepted)
        timeout = self._options.clamp(self._options.data_timeout)
        async with message_group(self._smtp, self._content, len(batches), data_timeout=timeout) as replies:
            self._connection.stage = "waiting for the replies to the end of data"
            for index, batch in enumerate(batches):
                try:
                    reply = await replies.reply(end_of_data=True)
                except SMTPException as exc:
                    self._smtp.close()
                    self._unknown_fate([rcpt for later in batches[index:] for rcpt in later], exc)
                    return
                for rcpt in batch:
                    self._attempt.results[rcpt] = reply_result(rcpt, reply.code, reply.message, self._remote_mta)

    def _unknown_fate(self, accepted: list[str], exc: SMTPException) -> None:
        """The final dot went out but (some) replies did not come: maybe delivered, so retry later, not elsewhere."""
        what = "timed out" if isinstance(exc, SMTPTimeoutError) else "lost connection"
        diagnostic = (
            f"{what} with {self._label} while waiting for the reply to the end of data "
            "-- message may be sent more than once"
        )
        logger.warning(
            "possible duplicate delivery to %d recipient(s): %s",
            len(accepted),
            diagnostic,
            extra={
                "host": self._label,
                "duplicate_possible": True,
                "unanswered": accepted,
            },
        )
        self._decide(accepted, message_pb2.OUTCOME_TEMPORARY, STATUS_BAD_CONNECTION, diagnostic, self._remote_mta)


def rcpt_accepted(code: int) -> bool:
    """Whether a RCPT reply accepts the recipient: any 2xx (RFC 5321 §4.2.1 positive completion; Postfix's client
    counts every 2xx). A 2xx recipient left out of DATA would be reported delivered without its message."""
    return 200 <= code < 300
