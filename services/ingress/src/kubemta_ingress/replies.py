"""SMTP reply texts, and the one place that gives every reply its enhanced status code.

Once ENHANCEDSTATUSCODES is advertised, RFC 2034 section 3 requires an RFC 3463
enhanced code in every reply except the greeting and the replies to HELO/EHLO.
aiosmtpd's built-in replies often lack one (`503 Error: need MAIL command`);
`enhance` adds the code that fits the basic reply code and leaves replies that
already carry one untouched. 354 (RFC 5321 section 4.2.2 intermediate) and 334
(RFC 4954 section 4 challenge) are not final replies and stay as they are.
"""

import functools
import re
from collections.abc import Sequence

from kubemta_ingress.rejections import Reason

# Our own replies (RFC 5321 section 4.2.2 codes, RFC 3463 enhanced codes).
SENDER_OK = "250 2.1.0 Ok"
RECIPIENT_OK = "250 2.1.5 Ok"
QUEUED = "250 2.0.0 Ok: queued as {queue_id}"
RELAY_DENIED = "554 5.7.1 <{address}>: Relay access denied"
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"  # RFC 5321 section 4.5.3.1.10
BAD_SENDER = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
NEEDS_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"  # RFC 6531 section 3.5
BARE_LINE_ENDING = "550 5.6.0 Message contains bare CR or LF; lines must end in CRLF"  # RFC 5321 section 2.3.8
NUL_CHARACTER = "550 5.6.0 Message contains NUL characters"  # RFC 5322 section 3.5 (text excludes NUL)
# RFC 5321 section 4.5.3.1: "500 Line too long" is the reply for an exceeded line limit.
LINE_TOO_LONG = "500 5.5.2 Error: line too long; lines are limited to 1000 octets with CRLF"  # section 4.5.3.1.6
COMMAND_TOO_LONG = "500 5.5.2 Error: command line too long"  # RFC 5321 section 4.5.3.1.4
BARE_LINE_ENDING_COMMAND = "500 5.5.2 Error: bare CR, LF or NUL in command; lines must end in CRLF"  # section 2.3.8
# RFC 3463 section 3.5: X.4.6 "Routing loop detected"; Postfix' hopcount_limit refuses such mail too.
TOO_MANY_HOPS = "554 5.4.6 Error: too many hops ({count} Received headers, limit {limit}): mail loop suspected"
QUEUE_UNAVAILABLE = "451 4.3.0 Error: queue unavailable, try again later"
# RFC 3463 section 3.4: X.3.4 message too big for system (the queue's own limit, not the client's SIZE).
TOO_BIG_FOR_QUEUE = "552 5.3.4 Error: message too big for the queue"
INTERNAL_ERROR = "451 4.3.0 Error: internal error, try again later"
SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down, closing transmission channel"

# Keywords the EHLO reply must list, in this order (RFC 2920, RFC 1870, RFC 6152, RFC 3461, RFC 6531, RFC 2034).
# DSN on every listener, as Postfix offers it by default: the parameters are read in esmtp_dsn.py.
EHLO_KEYWORDS = ("PIPELINING", "SIZE", "8BITMIME", "DSN", "SMTPUTF8", "ENHANCEDSTATUSCODES")

_REPLY = re.compile(r"(?P<code>[2-5]\d\d)(?P<sep>[ -])(?P<text>.*)\Z", re.DOTALL)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |\Z)")  # RFC 3463 section 2
_CLASSES = frozenset({"2.", "4.", "5."})

# Replies that are not final, or exempt from enhanced codes (RFC 2034 section 3).
VERBATIM_CODES = frozenset({220, 334, 354})

# RFC 3463 codes for aiosmtpd's built-in replies, by basic reply code.
ENHANCED_CODES: dict[int, str] = {
    211: "2.0.0",
    214: "2.0.0",
    221: "2.0.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.0.0",
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.7.0",  # aiosmtpd uses 554 only to refuse commands after a failed TLS handshake
    555: "5.5.4",
}

# aiosmtpd replies that refuse a message, with the reason they are counted under
# (aiosmtpd/smtp.py smtp_MAIL, smtp_RCPT and smtp_DATA).
BUILTIN_REJECTIONS: dict[str, Reason] = {
    "552 Error: message size exceeds fixed maximum message size": Reason.MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": Reason.MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": Reason.LINE_TOO_LONG,
    "553 5.1.3 Error: malformed address": Reason.BAD_ADDRESS,
}

# aiosmtpd replies we word differently: a syntax error in an address is a 501 (RFC 5321 section 4.2.4);
# a line over a limit gets the precise wording of our own refusal.
_REWRITES: dict[str, str] = {
    "553 5.1.3 Error: malformed address": "501 5.1.3 Bad address syntax",
    "500 Line too long (see RFC5321 4.5.3.1.6)": LINE_TOO_LONG,
    "500 Command line too long": COMMAND_TOO_LONG,
}

# aiosmtpd reply codes we correct, by the start of the reply: HELP is answered 214
# (RFC 5321 section 4.3.2 lists 211/214, not 250); a VRFY argument that is not an
# address is a syntax error, 501, not "not implemented".
_PREFIX_REWRITES: tuple[tuple[str, str], ...] = (
    ("250 Supported commands: ", "214 Supported commands: "),
    ("250 Syntax: ", "214 Syntax: "),
    ("502 Could not VRFY ", "501 Could not VRFY "),
)


def speakable(reply: str) -> str:
    """`reply` as a reply line may carry it: a character that is not printable becomes `?`. aiosmtpd echoes a VRFY
    argument that is not an address, where a client's byte that is not UTF-8 is a lone surrogate (which cannot be
    encoded: the reply was an internal error) and a control character would reach the client's terminal or log."""
    if reply.isprintable():  # checked in C: every reply but a hostile echo
        return reply
    return "".join(character if character.isprintable() else "?" for character in reply)


def reply_code(reply: str) -> int | None:
    """The basic reply code of `reply`, or None when it is not a reply line."""
    match = _REPLY.match(reply)
    return int(match["code"]) if match else None


def has_enhanced_code(reply: str) -> bool:
    """True when the text of `reply` starts with an RFC 3463 enhanced status code."""
    match = _REPLY.match(reply)
    return bool(match and _ENHANCED.match(match["text"]))


def enhance(reply: str) -> str:
    """`reply` with an enhanced status code inserted after the basic code when it has none."""
    if reply[4:6] in _CLASSES and _ENHANCED.match(reply, 4) and _REPLY.match(reply) and reply not in _REWRITES:
        return reply  # our own replies (a queue id in some): they carry one (no prefix rewrite starts so)
    return _enhanced(reply)


@functools.lru_cache(maxsize=256)
def _enhanced(reply: str) -> str:
    """`enhance` for the rest: aiosmtpd's replies, the same few texts again and again."""
    reply = _REWRITES.get(reply, reply)
    for prefix, replacement in _PREFIX_REWRITES:
        if reply.startswith(prefix):
            reply = replacement + reply[len(prefix) :]
    match = _REPLY.match(reply)
    if match is None:
        return reply
    code = int(match["code"])
    if code in VERBATIM_CODES or _ENHANCED.match(match["text"]):
        return reply
    enhanced = ENHANCED_CODES.get(code, f"{code // 100}.0.0")
    return f"{code}{match['sep']}{enhanced} {match['text']}"


def builtin_rejection(reply: str) -> Reason | None:
    """The rejection reason when `reply` is one of aiosmtpd's own message refusals."""
    return BUILTIN_REJECTIONS.get(reply)


def ehlo_response(lines: Sequence[str], size_limit: int) -> list[str]:
    """aiosmtpd's EHLO reply lines, completed with the keywords in `EHLO_KEYWORDS` (the same few for every
    session of a listener: remembered)."""
    return list(_ehlo_response(tuple(lines), size_limit))


@functools.lru_cache(maxsize=64)
def _ehlo_response(lines: tuple[str, ...], size_limit: int) -> tuple[str, ...]:
    """`ehlo_response`, computed.

    The first line (the host name) stays first, then the required keywords in
    order, then whatever else aiosmtpd listed (e.g. HELP); RFC 5321 section 4.2.1
    multi-line form: `250-` on every line but the last, `250 ` on the last.
    """
    items = [line[4:] for line in lines]
    if not items:
        raise ValueError("EHLO reply without the greeting line")
    offered = {item.split(" ", 1)[0].upper(): item for item in items[1:]}
    wanted = {"SIZE": f"SIZE {size_limit}"}
    keywords = [offered.pop(name, wanted.get(name, name)) for name in EHLO_KEYWORDS]
    complete = [items[0], *keywords, *offered.values()]
    return (*(f"250-{item}" for item in complete[:-1]), f"250 {complete[-1]}")
