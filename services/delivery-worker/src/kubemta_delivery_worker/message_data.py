"""The message content as it goes over the wire after DATA.

RFC 5321 §2.3.8: lines end in CRLF (a bare CR or LF is not allowed); §4.5.2: a line
starting with "." gets a second "." (transparency); §4.1.1.4: the data ends with
CRLF "." CRLF.
"""

import re

_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
END_OF_DATA = b".\r\n"


def normalize_line_endings(content: bytes) -> bytes:
    """Every line ending as CRLF, and the content ending with one (RFC 5321 §2.3.8).

    What the ingress accepted already has CRLF only (it refuses bare CR and LF); three
    counts in C tell that case apart without rewriting the message.
    """
    crlf = content.count(b"\r\n")
    if content.count(b"\r") == crlf == content.count(b"\n"):
        normalized = content
    else:
        normalized = _LINE_ENDINGS.sub(b"\r\n", content)
    if not normalized.endswith(b"\r\n"):
        normalized += b"\r\n"
    return normalized


def wire_data(normalized: bytes) -> bytes:
    """Dot-stuffed content followed by the end-of-data line (RFC 5321 §4.5.2, §4.1.1.4)."""
    if not normalized.startswith(b".") and b"\n." not in normalized:
        return normalized + END_OF_DATA  # no line starts with a dot: nothing to stuff
    return _LEADING_DOT.sub(b"..", normalized) + END_OF_DATA


def has_8bit(content: bytes) -> bool:
    """True when the content has bytes outside 7-bit ASCII (needs BODY=8BITMIME, RFC 6152)."""
    return not content.isascii()
