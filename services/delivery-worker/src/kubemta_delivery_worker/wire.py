"""The worker's one reader of SMTP replies for whatever is written at once: a command group, or the data.

Two things write more than one command (or one block) and then read several replies:

- RFC 2920 pipelining: MAIL FROM, every RCPT TO and DATA in one write, then their
  replies in order. DATA ends the group (RFC 2920 §3.1): its reply is read before any
  content is sent. Every reply of the group is read, even after a refused MAIL FROM
  (RFC 2920 §3.1: "MUST check ALL statuses"), so the session stays in step with the
  server; when the server answers 354 to a DATA no recipient was accepted for, the
  empty message is ended with a single dot ("the client SMTP should send a single dot").
- The message data: one reply after the final dot for SMTP, one per accepted recipient
  for LMTP (RFC 2033 §4.2), which usually arrive in one segment (dialect.py).

aiosmtplib reads one reply per command it sent and drops data that arrives while a
parsed reply still waits to be picked up, so those replies would be lost. While they
are read, a `_ReplyReader` takes aiosmtplib's place as the transport's protocol (asyncio
`set_protocol`), and gives it back afterwards; the single commands of a session
(greeting, EHLO/LHLO, STARTTLS, AUTH, RSET, QUIT) go through aiosmtplib as usual. Like
aiosmtplib, a group closes the connection on a timeout, a lost connection, or a 421.

aiosmtplib internals used here (pinned in pyproject.toml, checked by test_worker_wire.py):
`SMTP.protocol`, `SMTPProtocol.transport`/`write`, `quote_address`, and the protocol
module's `COMMAND_INJECTION_REGEX`, `MAX_LINE_LENGTH`, `MAX_RESPONSE_LENGTH`.
"""

import asyncio
import functools
import logging
from collections.abc import Iterable
from types import TracebackType

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH, SMTPProtocol

from kubemta_delivery_worker.message_data import END_OF_DATA, wire_data

logger = logging.getLogger(__name__)

# RFC 2920 §3: the EHLO keyword (aiosmtplib keeps extension names in lower case).
PIPELINING = "pipelining"
# RFC 2920 §3.1: DATA is the last command of a group.
DATA_COMMAND = b"DATA\r\n"
# RFC 5321 §4.1.1.5; RFC 2920 §3.1 lets it stand anywhere in a group (a reused session's leads it).
RSET_COMMAND = b"RSET\r\n"
# RFC 5321 §4.2.2 / §3.3: 354 is the go-ahead for the message data.
START_MAIL_INPUT = 354


@functools.lru_cache(maxsize=4096)
def _quoted(address: str, encoding: str) -> bytes:
    """aiosmtplib's `<address>` (its email.utils parse is most of a command line's cost; senders and
    recipients repeat, so it is kept); raises ValueError as quote_address or the encoding does."""
    return quote_address(address).encode(encoding)


def command_line(command: bytes, address: str, options: Iterable[str], encoding: str) -> bytes:
    """`MAIL FROM:<address> options` or `RCPT TO:<address>` with the bytes aiosmtplib's `SMTP.mail`/`rcpt` send.

    Raises ValueError where they do: an address aiosmtplib will not quote, one the encoding
    cannot carry, or a control character in any argument.
    """
    args = [command + _quoted(address, encoding), *(option.encode("ascii") for option in options)]
    for arg in args:
        if COMMAND_INJECTION_REGEX.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args) + b"\r\n"


class _ReplyReader(asyncio.Protocol):
    """Buffers what the server sends and parses it into replies; the rest is passed to aiosmtplib's protocol."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._arrived = asyncio.Event()
        self._gone: SMTPServerDisconnected | None = None
        self._timed_out = False  # the wait of the current reply() ran out

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        self._arrived.set()

    def eof_received(self) -> bool | None:
        self._disconnected(SMTPServerDisconnected("Unexpected EOF received"))
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        error = SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._disconnected(error)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _disconnected(self, error: SMTPServerDisconnected) -> None:
        if self._gone is None:
            self._gone = error
        self._arrived.set()

    async def reply(self, seconds: float) -> SMTPResponse:
        """The next reply, waiting at most `seconds` (RFC 5321 §4.2: lines `code-text`, the last `code text`).

        A reply already buffered (the usual case for all but the first of a group: they
        arrive in one segment) is returned without arming a timer.
        """
        if (response := self._parse()) is not None:
            return response
        timer = asyncio.get_running_loop().call_later(seconds, self._expired)
        try:
            while (response := self._parse()) is None:
                if self._gone is not None:
                    raise self._gone
                if self._timed_out:
                    raise SMTPReadTimeoutError("Timed out waiting for server response")
                self._arrived.clear()
                await self._arrived.wait()
        finally:
            timer.cancel()
            self._timed_out = False
        return response

    def _expired(self) -> None:
        self._timed_out = True
        self._arrived.set()

    def _parse(self) -> SMTPResponse | None:
        """One complete reply taken from the buffer, or None; aiosmtplib's limits and errors."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end == -1:
            if len(buffer) > MAX_RESPONSE_LENGTH:
                raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
            return None
        if buffer[3:4] == b" " and end < MAX_LINE_LENGTH and buffer[:3].isdigit():  # the usual one-line reply
            text = bytes(buffer[4 : end + 1]).strip(b" \t\r\n").decode("utf-8", "surrogateescape")
            code = int(buffer[:3])
            del buffer[: end + 1]
            return SMTPResponse(code, text)
        texts: list[bytes] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset : end + 1])
            if len(line) > MAX_LINE_LENGTH:
                raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                raise SMTPResponseException(
                    SMTPStatus.invalid_response.value, f"Malformed SMTP response line: {text}"
                ) from None
            offset = end + 1
            texts.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return SMTPResponse(code, b"\n".join(texts).decode("utf-8", "surrogateescape"))
        if len(self._buffer) > MAX_RESPONSE_LENGTH:
            raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
        return None


class ReplyGroup:
    """What is written at once on `smtp`'s connection (`async with` writes it); `reply()` reads the next reply.

    A timeout, a lost connection or a malformed reply closes the connection and raises
    (SMTPTimeoutError, SMTPServerDisconnected, SMTPResponseException) as aiosmtplib's
    commands do; so does a reply asked for after a 421 closed it.
    """

    def __init__(
        self, smtp: SMTP, commands: list[bytes], *, timeout: float, data_timeout: float, due: int | None = None
    ) -> None:
        self._smtp = smtp
        self._commands = commands
        self._timeout = timeout
        self._data_timeout = data_timeout
        self._due = len(commands) if due is None else due  # replies expected: one per command unless said
        self._last: SMTPResponse | None = None
        self._protocol: SMTPProtocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._reader: _ReplyReader | None = None

    async def __aenter__(self) -> "ReplyGroup":
        protocol = self._smtp.protocol
        transport = protocol.transport if protocol is not None else None
        if protocol is None or transport is None or transport.is_closing():
            raise SMTPServerDisconnected("Server not connected")
        self._protocol, self._transport, self._reader = protocol, transport, _ReplyReader(protocol)
        transport.set_protocol(self._reader)
        protocol.write(b"".join(self._commands))  # one write: one TCP segment for any usual group
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._transport is not None and self._protocol is not None:
            self._transport.set_protocol(self._protocol)  # aiosmtplib reads the replies from now on

    async def reply(self, *, end_of_data: bool = False) -> SMTPResponse:
        """The next reply of the group (aiosmtplib closes on 421, RFC 5321 §3.8: so does this)."""
        if self._reader is None or not self._smtp.is_connected:
            raise SMTPServerDisconnected("Server not connected")
        self._due -= 1
        try:
            response = await self._reader.reply(self._data_timeout if end_of_data else self._timeout)
        except (SMTPException, OSError):
            self._smtp.close()  # the session is out of step: never reuse it
            raise
        if response.code == SMTPStatus.domain_unavailable:
            self._smtp.close()
        self._last = response
        return response

    async def drain(self) -> None:
        """Read and ignore the replies still due; end the data with a lone dot if DATA got 354 (RFC 2920 §3.1).

        Every recipient already has its answer: a connection that fails now is only
        closed (not reused), it fails no one.
        """
        try:
            while self._due > 0:
                await self.reply()
            if self._protocol is not None and self._last is not None and self._last.code == START_MAIL_INPUT:
                self._protocol.write(END_OF_DATA)
                self._due += 1  # the dot is one more command, with one more reply
                await self.reply(end_of_data=True)
        except (SMTPException, OSError) as exc:
            logger.debug("pipelined session out of step, closed: %s", exc)
            self._smtp.close()


def message_group(smtp: SMTP, content: bytes, replies: int, *, data_timeout: float) -> ReplyGroup:
    """The dot-stuffed `content` with its final dot, and the `replies` to it (1 for SMTP, 1 per recipient for LMTP)."""
    return ReplyGroup(smtp, [wire_data(content)], timeout=data_timeout, data_timeout=data_timeout, due=replies)
