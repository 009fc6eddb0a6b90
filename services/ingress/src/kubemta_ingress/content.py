"""What the ingress requires of the bytes it reads: message content and command lines.

Lines end in CRLF and nothing else. RFC 5321 section 2.3.8 forbids a bare CR or LF
in SMTP commands and data, RFC 5322 section 2.3 says the same of message bodies, and
its `text` (section 3.5) excludes NUL.

SMTP smuggling (SEC Consult, December 2023; CVE-2023-51764/51765/51766) works because
two servers find a different end of data in the same stream: a sender's MTA passes on
`<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR>.<CR>`, `<CR><LF>.<CR>` or `<CR><LF><NUL>.<CR><LF>`
inside a message, and the next hop takes it for `<CR><LF>.<CR><LF>` and reads what
follows as new commands (a second, forged message). kubemta closes both halves:

- Inbound, only `<CR><LF>.<CR><LF>` ends DATA: aiosmtpd splits the data at CRLF only
  and ends it only on a line that is exactly `.<CR><LF>`, so every other form stays
  inside the message, where the checks below find it.
- A message holding a bare CR, a bare LF or a NUL is refused whole, after the real
  end of data, with `550 5.6.0` (replies.BARE_LINE_ENDING, replies.NUL_CHARACTER):
  it is never queued, so it can never leave kubemta and meet a lenient next hop.

Refusing, not normalising: normalising (Postfix' `smtpd_forbid_bare_newline = normal`,
KumoMTA's `invalid_line_endings = "Fix"`) has to guess which bytes the client meant as
line ends, changes the signed bytes (DKIM fails), and keeps mail from clients that
are broken enough to be smuggling vectors themselves. Refusing is what Postfix does
with `smtpd_forbid_bare_newline = strict` (`521 5.5.2 ... bare <LF> received`), what
sendmail's `o`/`g`/`u` options and KumoMTA's default `Deny` do, and what RFC 5321
allows; the client learns exactly why (`5.6.0`, "lines must end in CRLF") and a
correct client never sees it. Command lines are held to the same rule: a command
ending in a bare LF or holding a bare CR (`MAIL FROM:<a@b>\\rRCPT TO:<c@d>`) is
answered `500 5.5.2` (replies.BARE_LINE_ENDING_COMMAND) and not executed.

A text line may hold at most 1000 octets with its CRLF, the transparency dot not
counted (RFC 5321 section 4.5.3.1.6); a longer line is refused with
replies.LINE_TOO_LONG so that no line kubemta relays breaks the limit downstream.
A line starting with a dot and followed by anything (`. `, `..`) is not an end of
data: its first dot is removed (RFC 5321 section 4.5.2) and the rest is kept byte
for byte; outbound, the delivery worker stuffs the dot again.
"""

import asyncio
import enum
from collections.abc import Buffer, Sized
from typing import Protocol

from kubemta_ingress import replies
from kubemta_ingress.rejections import Reason

CRLF = b"\r\n"
MAX_TEXT_LINE = 1000  # octets including CRLF, RFC 5321 section 4.5.3.1.6


class ContentProblem(enum.Enum):
    """Why a message's content is refused."""

    BARE_LINE_ENDING = "bare_line_ending"
    NUL_CHARACTER = "nul_character"
    LINE_TOO_LONG = "line_too_long"


# The rejection reason and reply for each problem (one place, so the handler needs no per-problem code).
REFUSALS: dict[ContentProblem, tuple[Reason, str]] = {
    ContentProblem.BARE_LINE_ENDING: (Reason.BAD_LINE_ENDING, replies.BARE_LINE_ENDING),
    ContentProblem.NUL_CHARACTER: (Reason.NUL_CHARACTER, replies.NUL_CHARACTER),
    ContentProblem.LINE_TOO_LONG: (Reason.LINE_TOO_LONG, replies.LINE_TOO_LONG),
}


def has_bare_line_ending(content: bytes) -> bool:
    """True when `content` holds a CR not followed by LF, or an LF not preceded by CR."""
    pairs = content.count(CRLF)
    return content.count(b"\r") != pairs or content.count(b"\n") != pairs


def has_long_line(content: bytes, limit: int = MAX_TEXT_LINE) -> bool:
    """True when a line of `content` (CRLF-separated, the CRLF counted) is longer than `limit` octets."""
    return any(len(line) + len(CRLF) > limit for line in content.split(CRLF))


def content_problem(content: bytes) -> ContentProblem | None:
    """The first reason to refuse `content` (unstuffed message data), or None when it may be queued."""
    if has_bare_line_ending(content):
        return ContentProblem.BARE_LINE_ENDING
    if b"\0" in content:
        return ContentProblem.NUL_CHARACTER
    if has_long_line(content):
        return ContentProblem.LINE_TOO_LONG
    return None


def refusal(problem: ContentProblem) -> tuple[Reason, str]:
    """The rejection reason and SMTP reply for a content problem."""
    return REFUSALS[problem]


def bad_command_line(line: bytes) -> bool:
    """True when a command line as read (up to and including its LF) is not text ending in one CRLF.

    A command must end in CRLF and hold no other CR or LF (RFC 5321 sections 2.3.8
    and 4.1.1); NUL has no place in a command either.
    """
    return not line.endswith(CRLF) or has_bare_line_ending(line) or b"\0" in line


class BadCommandLine(Exception):
    """A command line (or AUTH response) that does not end in a lone CRLF, or holds a NUL."""


class SizedBuffer(Buffer, Sized, Protocol):
    """What `StreamReader.readuntil` takes as a separator."""


class CommandLineReader(asyncio.StreamReader):
    """aiosmtpd's stream reader, refusing bad command lines.

    aiosmtpd reads commands and AUTH responses with `readuntil()` / `readline()`
    (separator LF) and DATA with `readuntil(b"\\r\\n")`. A line read with the LF
    separator that `bad_command_line` refuses raises BadCommandLine after it was
    consumed, so the session answers it (replies.BARE_LINE_ENDING_COMMAND) and
    reads the next line. DATA is left alone: content_problem refuses it whole. The
    pieces of a line over the stream limit (which aiosmtpd reads and discards before
    answering "command line too long") are not checked.
    """

    _rest_of_long_line = False  # aiosmtpd is discarding a line over the limit, piece by piece

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


def enforce_crlf_commands(reader: asyncio.StreamReader) -> None:
    """Make the reader aiosmtpd created for a connection a CommandLineReader (it adds no state)."""
    reader.__class__ = CommandLineReader
