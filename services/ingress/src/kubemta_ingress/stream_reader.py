"""The byte stream of one SMTP connection: command lines checked as they are read, DATA read in blocks.

`SmtpStreamReader` is the `asyncio.StreamReader` aiosmtpd creates for a connection,
given this class by `adopt` (it adds no state of its own):

- Commands and AUTH responses: aiosmtpd reads them with `readuntil()` / `readline()`
  (separator LF). A line that `content.bad_command_line` refuses raises
  BadCommandLine after it was consumed, so the session answers it
  (replies.BARE_LINE_ENDING_COMMAND) and reads the next line. The pieces of a line
  over the stream limit (which aiosmtpd reads and discards before answering "command
  line too long") are not checked.
- DATA: `read_message_data` takes whole blocks from the buffer up to the first
  `<CR><LF>.<CR><LF>` (or `.<CR><LF>` as the very first line, an empty message), the
  only end of data there is (content.py explains why no other form may end it). aiosmtpd
  reads DATA one line at a time, which was ~38% of the ingress' CPU time under load.
  Whatever follows the end of data stays buffered for the next command (pipelining).
  Data over the size limit is read to its end and dropped as it comes, so a client
  learns `552` only after its final dot (RFC 5321 section 4.2.5) and memory stays bounded.

Like the standard library's own `readuntil`, the DATA reader works on the reader's
buffer (`_buffer`, `_wait_for_data`, `_maybe_resume_transport`); that is the one place
kubemta reads StreamReader internals, listed in session/aiosmtpd_contract.py
(`STREAM_READER`) and checked by test_ingress_aiosmtpd_contract.py.
"""

import asyncio
import enum
from collections.abc import Awaitable, Buffer, Callable, Sized
from typing import Protocol

from kubemta_ingress.content import BadCommandLine, bad_command_line
from kubemta_ingress.data_budget import Reservation

END_OF_DATA = b"\r\n.\r\n"  # RFC 5321 section 4.1.1.4: the CRLF ending the last line, ".", CRLF
EMPTY_DATA = b".\r\n"  # the end of data as the first line: no content at all
KEEP = len(END_OF_DATA) - 1  # bytes kept back while searching: an end of data may straddle two blocks
DATA_BUFFER_LIMIT = 256 * 1024
"""The reader's flow-control limit during DATA (the transport pauses above twice this); commands keep aiosmtpd's."""


class DataRefusal(enum.Enum):
    """Why the data of a message was read to its end and dropped."""

    TOO_LARGE = "too_large"
    """Longer than the size limit (552 5.3.4)."""
    OVER_BUDGET = "over_budget"
    """The process-wide budget for message data had no room for it (452 4.3.1)."""


class SizedBuffer(Buffer, Sized, Protocol):
    """What `StreamReader.readuntil` takes as a separator."""


class SmtpStreamReader(asyncio.StreamReader):
    """aiosmtpd's stream reader with checked command lines and a block-wise DATA reader."""

    _rest_of_long_line = False  # aiosmtpd is discarding a line over the limit, piece by piece
    # asyncio.StreamReader's internals that read_message_data uses (typeshed leaves them out)
    _buffer: bytearray
    _limit: int
    _eof: bool
    _wait_for_data: Callable[[str], Awaitable[None]]
    _maybe_resume_transport: Callable[[], None]

    async def readuntil(self, separator: SizedBuffer = b"\n") -> bytes:
        if bytes(separator) != b"\n":
            return await super().readuntil(separator)
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError:
            self._rest_of_long_line = True  # answered "500 5.5.2 ... too long" once it is read
            raise
        if self._rest_of_long_line:
            self._rest_of_long_line = False
        elif bad_command_line(line):
            raise BadCommandLine(repr(line[:64]))
        return line

    async def read_message_data(
        self, size_limit: int | None, reservation: Reservation | None = None
    ) -> bytes | DataRefusal:
        """The data up to the end of data, still dot-stuffed, with the CRLF before the final dot.

        TOO_LARGE when it was longer than `size_limit` octets (counted as received, without
        the end-of-data line), OVER_BUDGET when `reservation` could not grow to hold it
        (data_budget.py); either way it was read to its end and dropped. Raises
        IncompleteReadError when the connection ends first.
        """
        kept = bytearray()
        size = 0
        over_budget = False
        at_start = True
        command_limit = self._limit
        self._limit = max(command_limit, DATA_BUFFER_LIMIT)
        try:
            while True:
                buffer = self._buffer
                if at_start and buffer.startswith(EMPTY_DATA):
                    del buffer[: len(EMPTY_DATA)]
                    return b""
                end = buffer.find(END_OF_DATA)
                if end >= 0:
                    take, consume = end + 2, end + len(END_OF_DATA)
                elif at_start and EMPTY_DATA.startswith(bytes(buffer)):
                    take = consume = 0  # "", "." or ".\r": could still be an empty message
                else:
                    take = consume = max(len(buffer) - KEEP, 0)
                if take:
                    at_start = False
                    size += take
                    if (size_limit is None or size <= size_limit) and not over_budget:
                        if reservation is None or reservation.grow(take):
                            kept += buffer[:take]
                        else:
                            over_budget = True
                    if over_budget or (size_limit is not None and size > size_limit):
                        kept.clear()
                        if reservation is not None:
                            reservation.release()
                del buffer[:consume]
                if end >= 0:
                    if size_limit is not None and size > size_limit:
                        return DataRefusal.TOO_LARGE
                    return DataRefusal.OVER_BUDGET if over_budget else bytes(kept)
                if self._eof:
                    raise asyncio.IncompleteReadError(bytes(kept), None)
                self._maybe_resume_transport()
                await self._wait_for_data("read_message_data")
        finally:
            self._limit = command_limit
            self._maybe_resume_transport()


def adopt(reader: asyncio.StreamReader) -> SmtpStreamReader:
    """Make the reader aiosmtpd created for a connection an SmtpStreamReader (it adds no state)."""
    reader.__class__ = SmtpStreamReader
    assert isinstance(reader, SmtpStreamReader)
    return reader
