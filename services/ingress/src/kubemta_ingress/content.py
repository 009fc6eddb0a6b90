"""What the ingress requires of the bytes it reads: message content and command lines.

Lines end in CRLF and nothing else. RFC 5321 section 2.3.8 forbids a bare CR or LF
in SMTP commands and data, RFC 5322 section 2.3 says the same of message bodies, and
its `text` (section 3.5) excludes NUL.

SMTP smuggling (SEC Consult, December 2023; CVE-2023-51764/51765/51766) works because
two servers find a different end of data in the same stream: a sender's MTA passes on
`<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR>.<CR>`, `<CR><LF>.<CR>` or `<CR><LF><NUL>.<CR><LF>`
inside a message, and the next hop takes it for `<CR><LF>.<CR><LF>` and reads what
follows as new commands (a second, forged message). kubemta closes both halves:

- Inbound, only `<CR><LF>.<CR><LF>` ends DATA (stream_reader.py looks for exactly
  that sequence, or `.<CR><LF>` right after the DATA command), so every other form
  stays inside the message, where the checks below find it.
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

import enum

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
    """True when a line of `content` (CRLF-separated, the CRLF counted) is longer than `limit` octets.

    Window by window, not line by line: every line that ends inside `limit` octets from `start` is short
    enough, so the search goes on after the last CRLF in that window, and a window without a CRLF holds
    the start of a line too long. A 10 KiB message of 78-octet lines takes eleven C searches and no copies;
    splitting it into its ~130 lines took 5 to 7 times as long (timeit).
    """
    start = 0
    while len(content) - start + len(CRLF) > limit:  # the rest, taken as one line, could be too long
        end = content.rfind(CRLF, start, start + limit)
        if end < 0:
            return True
        start = end + len(CRLF)
    return False


def received_count(content: bytes) -> int:
    """How many `Received:` fields the header section of `content` holds (RFC 5322 section 3.6.7).

    The header section ends at the first empty line (RFC 5322 section 2.1); a folded
    field's continuation lines start with white space and are not counted.
    """
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[: end + 2]
    count = 1 if header[:9].lower() == b"received:" else 0
    return count + header.lower().count(b"\r\nreceived:")


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


def unstuff(data: bytes) -> bytes:
    """Message data as received (up to and including the CRLF before the final dot) without transparency dots.

    RFC 5321 section 4.5.2: a line that starts with a dot has that first dot removed.
    Lines are split at CRLF only, so a dot after a bare LF is content (and refused).
    """
    content = data.replace(b"\r\n.", CRLF)
    return content[1:] if content.startswith(b".") else content
