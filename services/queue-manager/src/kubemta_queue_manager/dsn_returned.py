"""What of the original message a DSN returns (RFC 3461 §4.3, RFC 6522): the whole message, or its headers.

A failure DSN whose sender asked for RET=FULL returns the whole message as a `message/rfc822` part
when it is at most KUBEMTA_DSN_RETURN_SIZE_LIMIT bytes (the results handler checks the size) and
it can travel inside the DSN unchanged: 7-bit lines (8-bit MIME parts re-encoded by the converter
the worker uses for servers without 8BITMIME, kubemta_common.mime_7bit, so the DSN is 7-bit mail
any server takes), CRLF line endings, no line over 998 octets (RFC 5322 §2.1.1), a header block of
header fields. Anything else returns the headers (`text/rfc822-headers`), as a DSN without RET does,
and the human-readable part says why. The boundary of the DSN is checked to occur in no part
(dsn_mime), so no line of the returned message can end its part.
"""

import re

from kubemta_common.mime_7bit import Unconvertible, to_7bit
from kubemta_queue_manager.dsn_fields import MAX_LINE

CRLF = b"\r\n"
_HEADER_LINE = re.compile(rb"[!-9;-~]+:.*|[ \t].*", re.DOTALL)
"""RFC 5322 §2.2: a field name of printable ASCII but ":", a colon; or a folded continuation line."""


def returnable_message(content: bytes) -> bytes | None:
    """`content` as the body of a 7-bit `message/rfc822` part (8-bit parts re-encoded), or None when it cannot be one.

    >>> returnable_message(b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
    b'Subject: hi\\r\\n\\r\\nbody\\r\\n'
    >>> returnable_message(b"Subject: hi\\r\\n\\r\\nbare\\nLF\\r\\n") is None
    True
    """
    if not content:
        return None
    converted = to_7bit(content)
    if isinstance(converted, Unconvertible) or not converted.isascii():
        return None
    if not converted.endswith(CRLF):
        converted += CRLF
    lines = converted.split(CRLF)[:-1]
    if any(len(line) > MAX_LINE or b"\r" in line or b"\n" in line or b"\0" in line for line in lines):
        return None
    headers = lines[: lines.index(b"")] if b"" in lines else lines
    if not headers or not all(_HEADER_LINE.fullmatch(line) for line in headers) or headers[0][:1] in b" \t":
        return None
    return converted
