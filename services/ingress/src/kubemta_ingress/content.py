"""What the ingress requires of a message's content before queueing it.

Lines end in CRLF and nothing else: RFC 5321 section 2.3.8 forbids a bare CR or LF
in SMTP data, and accepting one invites SMTP smuggling (different software finds
a different end of data in the same stream). aiosmtpd splits DATA at CRLF only and
ends it only at CRLF.CRLF, so a bare CR or LF stays inside `original_content`;
counting the three sequences there finds every one. RFC 5322 section 2.3 says the
same of message bodies, and its `text` (section 3.5) excludes NUL, so a NUL is
refused too. Such messages are never passed on; the replies are
`550 5.6.0 Message contains bare CR or LF; lines must end in CRLF` and
`550 5.6.0 Message contains NUL characters` (see replies.py).
"""

import enum


class ContentProblem(enum.Enum):
    """Why a message's content is refused."""

    BARE_LINE_ENDING = "bare_line_ending"
    NUL_CHARACTER = "nul_character"


def has_bare_line_ending(content: bytes) -> bool:
    """True when `content` holds a CR not followed by LF, or an LF not preceded by CR."""
    pairs = content.count(b"\r\n")
    return content.count(b"\r") != pairs or content.count(b"\n") != pairs


def content_problem(content: bytes) -> ContentProblem | None:
    """The first reason to refuse `content`, or None when it may be queued."""
    if has_bare_line_ending(content):
        return ContentProblem.BARE_LINE_ENDING
    if b"\0" in content:
        return ContentProblem.NUL_CHARACTER
    return None
