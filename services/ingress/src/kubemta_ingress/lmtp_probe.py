"""One LMTP recipient probe (RFC 2033): would the mailbox server take mail for this address?

The dialogue is the start of an LMTP transaction and nothing more (RFC 2033 section 4):
the greeting (220), `LHLO <our host name>`, `MAIL FROM:<>` (the null sender, RFC 5321
section 4.5.5: nothing can ever bounce back from a probe), `RCPT TO:<address>`, then
`QUIT`; DATA is never sent. The RCPT reply decides: 2xx the mailbox exists, 5xx it does
not (or can never take mail), 4xx is a temporary answer, and so is any failure before
it (greeting, LHLO, MAIL, a broken reply): the mailbox server said nothing about the
recipient. Postfix' address verification probes the same way (verify(8)).

Only well-formed command lines are ever sent. An address with control characters (CR,
LF, NUL, DEL, ...), undecodable bytes, non-ASCII without SMTPUTF8 (RFC 6531 section
3.4), or one that would make the RCPT line longer than RFC 5321 section 4.5.3.1.4 allows
raises `UnsendableAddress` before anything is written. Replies are read with a bounded
line length and number of lines; the server's text is reduced to printable ASCII and
bounded before it is quoted in our replies and logs (`detail`).
"""

import asyncio
import enum
import re
from dataclasses import dataclass

MAX_COMMAND_LINE = 512  # RFC 5321 section 4.5.3.1.4: a command line, CRLF included
MAX_REPLY_LINES = 100  # a bound of our own on a multi-line reply (RFC 5321 section 4.2.1)
MAX_DETAIL = 200  # characters of the server's reply text quoted in our replies
SMTPUTF8 = "SMTPUTF8"  # RFC 6531 section 3.1 (the MAIL parameter of the same name: section 3.4)
CRLF = b"\r\n"
_REPLY_LINE = re.compile(r"(?P<code>[2-5]\d\d)(?:(?P<sep>[ -])(?P<text>.*))?\Z", re.DOTALL)  # RFC 5321 4.2
_ENHANCED = re.compile(r"(?P<code>[245]\.\d{1,3}\.\d{1,3})(?: |\Z)")  # RFC 3463 section 2


class ProbeStatus(enum.StrEnum):
    """What a probe found out about a recipient."""

    KNOWN = "known"
    """The mailbox server accepted RCPT (2xx)."""
    UNKNOWN = "unknown"
    """The mailbox server refused RCPT for good (5xx), or can never take the address."""
    TEMPFAIL = "tempfail"
    """No answer about the recipient: a 4xx, or the server was unreachable, slow or broken."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """A probe's answer, with a Postfix-style account of it (`host X said: 550 5.1.1 ...`)."""

    status: ProbeStatus
    detail: str
    enhanced: str = ""
    """The RFC 3463 code of the deciding reply, when the server gave one."""


class UnsendableAddress(ValueError):
    """The address cannot be written on an LMTP command line as it is."""


class ProtocolError(Exception):
    """The server's reply is not an SMTP/LMTP reply, or the connection ended in one."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete reply: its code and the text of each line."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        """The RFC 3463 code at the start of the text, or ""."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return match["code"] if match else ""

    def describe(self) -> str:
        """`code text` on one line (multi-line texts joined by spaces), printable ASCII, bounded."""
        return printable(f"{self.code} {' '.join(line for line in self.lines if line)}".strip())

    def offers(self, keyword: str) -> bool:
        """True when an LHLO reply lists `keyword` (RFC 5321 section 4.1.1.1 ehlo-line)."""
        return any(line.split(" ", 1)[0].upper() == keyword for line in self.lines[1:])


def printable(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` as printable ASCII (anything else becomes `?`), at most `limit` characters."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def command_line(line: str, *, smtputf8: bool) -> bytes:
    """`line` + CRLF as bytes, or UnsendableAddress when it is not a well-formed command line."""
    if not line.isprintable():  # C0 and C1 controls (CR, LF, NUL, DEL, NEL, ...), separators, format characters
        raise UnsendableAddress("control characters (CR, LF, NUL, ...) cannot be sent")
    if not line.isascii() and not smtputf8:
        raise UnsendableAddress("a non-ASCII address needs SMTPUTF8 (RFC 6531 section 3.4)")
    try:
        data = line.encode("utf-8") + CRLF
    except UnicodeEncodeError:
        raise UnsendableAddress("undecodable bytes cannot be sent") from None
    if len(data) > MAX_COMMAND_LINE:
        raise UnsendableAddress(f"the command line would exceed {MAX_COMMAND_LINE} octets (RFC 5321 4.5.3.1.4)")
    return data


def rcpt_command(address: str) -> bytes:
    """The `RCPT TO:<address>` line for a probe (SMTPUTF8 when the address is not ASCII), validated."""
    if not address or address.startswith("@") or "<" in address or ">" in address:
        raise UnsendableAddress("not a mailbox address")
    return command_line(f"RCPT TO:<{address}>", smtputf8=not address.isascii())


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One complete reply; ProtocolError when it is malformed, too long, or the connection ends."""
    code: int | None = None
    lines: list[str] = []
    for _ in range(MAX_REPLY_LINES):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise ProtocolError("lost connection") from None
        except asyncio.LimitOverrunError:
            raise ProtocolError("reply line too long") from None
        match = _REPLY_LINE.match(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
        if match is None or (code is not None and int(match["code"]) != code):
            raise ProtocolError(f"malformed reply: {printable(raw.decode('latin-1'))}")
        code = int(match["code"])
        lines.append(match["text"] or "")
        if match["sep"] != "-":
            return Reply(code, tuple(lines))
    raise ProtocolError(f"reply longer than {MAX_REPLY_LINES} lines")


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Reply:
    writer.write(line)
    await writer.drain()
    return await read_reply(reader)


def _said(server: str, reply: Reply, command: str) -> str:
    return f"host {server} said: {reply.describe()} (in reply to {command} command)"


async def probe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, *, helo: str, server: str
) -> ProbeResult:
    """Ask the LMTP server on (`reader`, `writer`) about `address`; `server` names it in the detail.

    Raises UnsendableAddress (before writing anything) for an address that cannot be sent,
    ProtocolError for a broken reply, OSError for a broken connection; the caller bounds the time.
    """
    rcpt = rcpt_command(address)
    smtputf8 = not address.isascii()
    greeting = await read_reply(reader)
    if greeting.code != 220:
        return ProbeResult(ProbeStatus.TEMPFAIL, f"host {server} refused to talk to me: {greeting.describe()}")
    lhlo = await _ask(reader, writer, command_line(f"LHLO {helo}", smtputf8=False))
    if lhlo.code != 250:
        return ProbeResult(ProbeStatus.TEMPFAIL, _said(server, lhlo, "LHLO"))
    if smtputf8 and not lhlo.offers(SMTPUTF8):
        detail = f"host {server} does not offer SMTPUTF8, which the recipient address needs"
        return ProbeResult(ProbeStatus.UNKNOWN, detail, "5.6.7")  # RFC 6531 section 3.5
    mail = await _ask(reader, writer, b"MAIL FROM:<> SMTPUTF8\r\n" if smtputf8 else b"MAIL FROM:<>\r\n")
    if mail.code // 100 != 2:
        return ProbeResult(ProbeStatus.TEMPFAIL, _said(server, mail, "MAIL FROM"))
    answer = await _ask(reader, writer, rcpt)
    writer.write(b"QUIT\r\n")  # its reply is not waited for: the answer is in
    detail = _said(server, answer, "RCPT TO")
    if answer.code < 300:
        return ProbeResult(ProbeStatus.KNOWN, detail, answer.enhanced)
    if answer.code >= 500:
        return ProbeResult(ProbeStatus.UNKNOWN, detail, answer.enhanced)
    return ProbeResult(ProbeStatus.TEMPFAIL, detail, answer.enhanced)
