"""The command layer: replies, the handler hooks, and the commands the ingress answers itself.

- Every reply passes through `push`, which adds the RFC 3463 enhanced status code
  (replies.enhance), counts aiosmtpd's own refusals as rejections, counts 5xx replies
  against the error limit and closes after any `421` (RFC 5321 section 3.8); replies to
  HELO/EHLO stay verbatim (RFC 2034 section 3). A multi-line reply (EHLO's) goes out in
  one write with its last line, not one write (and one segment to the client) per line.
- The handler hooks (interfaces.SmtpHandler) are called as aiosmtpd calls them; EHLO
  offers no AUTH without an authenticator, MAIL is refused with `452` when the data
  budget has no room, and a `250` to DATA resets the error count.
- DATA is read in blocks (stream_reader.py) instead of line by line, within the size
  limit and the data budget, with its own deadline (timers.py).
- Envelope addresses are parsed plainly where they can be (smtp_paths.py); an address
  email's parser would decode from RFC 2047 encoded words is refused as malformed.
- After EHLO, MAIL's and RCPT's DSN parameters (RFC 3461) are taken out of the command
  before aiosmtpd reads it, which would upper-case their xtext and refuse them with `555`,
  and handed to the handler's hook as the client wrote them, behind the options aiosmtpd
  read (esmtp_dsn.py); the handler checks them.
"""

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any

from aiosmtpd.smtp import syntax

from kubemta_ingress import limits, replies, stream_reader
from kubemta_ingress.content import BadCommandLine, unstuff
from kubemta_ingress.data_budget import INSUFFICIENT_STORAGE, Reservation, declared_size
from kubemta_ingress.esmtp_dsn import MAIL_KEYWORDS, RCPT_KEYWORDS, take_parameters
from kubemta_ingress.handler import text_field
from kubemta_ingress.listeners import POLICY_REFUSALS
from kubemta_ingress.proxy import client_address
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.session.core import CRLF, PROXY_NOT_RECOGNIZED
from kubemta_ingress.session.state import Phase
from kubemta_ingress.session.tls_start import TlsStart
from kubemta_ingress.smtp_paths import plain_path

logger = logging.getLogger(__name__)

AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"  # Postfix' wording
TOO_MUCH_DATA = "552 Error: Too much mail data"  # aiosmtpd's text; replies.enhance adds 5.3.4
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")  # RFC 2047 section 2


class Commands(TlsStart):
    """Replies, handler hooks and the commands the ingress implements."""

    # AUTH LOGIN prompts as other servers send them (`334 VXNlcm5hbWU6`, `334 UGFzc3dvcmQ6`); clients that
    # match the prompt text expect these, not aiosmtpd's "User Name\0" and "Password\0".
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BadCommandLine):
            logger.info("refused a command line: %s", error, extra={"client": client_address(self.session)})
            return replies.BARE_LINE_ENDING_COMMAND
        status: str = await super().handle_exception(error)
        return status

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        address, rest = self._address_and_parameters(arg)
        keywords = self._state.dsn_keywords
        if address is None or not rest or not keywords or self.session is None or not self.session.extended_smtp:
            return address, rest
        rest, taken = take_parameters(rest, keywords)
        self._state.dsn_parameters = tuple(taken)  # the hook gets these as written
        return address, rest

    def _address_and_parameters(self, arg: str) -> tuple[str | None, str | None]:
        plain = plain_path(arg)
        limit = self.local_part_limit
        if plain is not None and not (limit and len(plain[0].rpartition("@")[0]) > limit):
            return plain
        try:
            address, rest = super()._getaddr(arg)
        except (IndexError, ValueError):  # email's header parser fails so on input such as a lone '"'
            return None, None  # "malformed address", a 501 (replies._REWRITES)
        if address is not None and any(word not in address for word in ENCODED_WORD.findall(arg)):
            # email's header parser decodes RFC 2047 encoded words, even quoted: <"=?utf-8?b?Ym9i?="@x> would be
            # judged and queued as bob@x. An envelope address is never decoded (RFC 5321 knows no encoded words),
            # and nothing is rewritten: one the parser decoded is refused as malformed.
            return None, None
        return address, rest

    # -- replies ---------------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        if self._state.closed:
            return  # the session's last word is said
        if isinstance(status, bytes):
            await super().push(status)
            return
        state = self._state
        status = replies.speakable(status)  # aiosmtpd may echo a client's bytes
        if state.phase is Phase.HELLO:
            reply = status
        else:
            reply = replies.enhance(status)
            self._record_builtin_rejection(status, reply)
        if reply[3:4] == "-":  # a continuation line: it waits for the reply's last line (RFC 5321 section 4.2.1)
            state.held_lines += self._encoded(reply) + CRLF
            return
        if state.held_lines:
            lines, state.held_lines = state.held_lines + self._encoded(reply), b""
            await super().push(lines)
        else:
            await super().push(reply)
        data_timeout = self._options.session_limits.data_timeout
        if reply.startswith("354") and data_timeout is not None:
            self._timers.start_data(data_timeout, self._data_timed_out)
        if reply.startswith("421 "):
            self._close_silently()  # RFC 5321 section 3.8: 421 closes the channel
            return
        if self._errors.record(reply):
            self._end_session(limits.TOO_MANY_ERRORS.format(hostname=self.hostname), Reason.TOO_MANY_ERRORS)
            return
        if reply[3:4] == " ":
            self._close_if_draining()

    def _encoded(self, reply: str) -> bytes:
        """A reply line as aiosmtpd's `push` encodes it."""
        return reply.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")

    def _record_builtin_rejection(self, status: str, reply: str) -> None:
        reason = replies.builtin_rejection(status) or POLICY_REFUSALS.get(status)
        if reason is not None:
            self._record_rejection(reason, reply)

    def _record_rejection(self, reason: Reason, reply: str) -> None:
        sender = text_field(self.envelope.mail_from) if self.envelope is not None else ""
        record_rejection(
            reason,
            reply,
            client=client_address(self.session),
            helo=self._helo(),
            sender=sender,
            listener=self._policy.kind.value,
        )

    # -- handler hooks ---------------------------------------------------------------------------

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if self._state.closed:
            await asyncio.sleep(0)  # the handler task is cancelled: this raises CancelledError
            raise asyncio.CancelledError
        if command == "EHLO" and self._options.authenticator is None:
            hostname, responses = args
            args = (hostname, [line for line in responses if not line[4:].upper().startswith("AUTH")])
        budget = self._options.data_budget
        if command == "MAIL" and budget is not None:
            _, mail_options = args
            if budget.available <= 0 or declared_size(mail_options) > budget.available:
                self._record_rejection(Reason.INSUFFICIENT_STORAGE, INSUFFICIENT_STORAGE)
                return INSUFFICIENT_STORAGE  # no room now: the client tries again later
        if command in ("MAIL", "RCPT"):
            address, options = args
            args = (address, [*options, *self._state.dsn_parameters])
        if command != "DATA":
            return await super()._call_handler_hook(command, *args)
        self._timers.stop_data()  # the message is complete
        self._state.enter(Phase.QUEUEING)  # left when the reply to DATA is sent (smtp_DATA)
        status = await super()._call_handler_hook(command, *args)
        if isinstance(status, str) and status.startswith("250"):
            self._errors.reset()
        return status

    # -- commands --------------------------------------------------------------------------------

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        self._state.enter(Phase.HELLO)
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._state.leave(Phase.HELLO)
        self._close_if_draining()

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        self._state.enter(Phase.HELLO)
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._state.leave(Phase.HELLO)
        self._close_if_draining()

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._with_dsn_parameters(MAIL_KEYWORDS, super().smtp_MAIL(arg))

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._with_dsn_parameters(RCPT_KEYWORDS, super().smtp_RCPT(arg))

    async def _with_dsn_parameters(self, keywords: frozenset[str], command: Coroutine[Any, Any, None]) -> None:
        """Run aiosmtpd's MAIL or RCPT with the DSN parameters named in `keywords` taken out (`_getaddr`)."""
        state = self._state
        state.dsn_keywords, state.dsn_parameters = keywords, ()
        try:
            await command
        finally:
            state.dsn_keywords, state.dsn_parameters = frozenset(), ()

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        if self._options.authenticator is None:
            await self.push(AUTH_NOT_ENABLED)
            return
        await super().smtp_AUTH(arg)

    async def smtp_PROXY(self, arg: str) -> None:
        """A PROXY header where none may be (not listed in HELP): refused as an unknown command."""
        self._refuse_untrusted_proxy_header()
        await self.push(PROXY_NOT_RECOGNIZED)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._state.enter(Phase.DATA)
        try:
            await self._receive_message(arg)
        finally:
            self._state.leave(Phase.DATA, Phase.QUEUEING)
            self._timers.stop_data()
        pending = self._state.pending_end
        if pending is not None:
            self._state.pending_end = None
            reply, reason = pending
            self._end_session(reply or None, reason)
            return
        self._close_if_draining()

    async def _receive_message(self, arg: str) -> None:
        """aiosmtpd's DATA command with the data read in blocks (stream_reader.py) instead of line by line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader = self._reader
        assert isinstance(reader, stream_reader.SmtpStreamReader)
        budget = self._options.data_budget
        reservation = budget.reservation() if budget is not None else None
        try:
            await self._read_and_queue(reader, reservation)
        finally:
            if reservation is not None:  # the data is queued or refused: its bytes are free again
                reservation.release()

    async def _read_and_queue(self, reader: stream_reader.SmtpStreamReader, reservation: Reservation | None) -> None:
        assert self.envelope is not None
        try:
            data = await reader.read_message_data(self.data_size_limit, reservation)
        except asyncio.IncompleteReadError:
            self._writer.close()
            return
        if isinstance(data, stream_reader.DataRefusal):
            if data is stream_reader.DataRefusal.OVER_BUDGET:
                self._record_rejection(Reason.INSUFFICIENT_STORAGE, INSUFFICIENT_STORAGE)
                await self.push(INSUFFICIENT_STORAGE)
            else:
                await self.push(TOO_MUCH_DATA)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        content = unstuff(data)
        del data
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)
