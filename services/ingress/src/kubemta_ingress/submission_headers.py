"""Missing `Date:` and `Message-ID:` added to submitted mail (RFC 6409 §8.2, §8.3).

Many application libraries omit them, and large receivers score mail without them as spam
(RFC 5322 §3.6 requires Date:, and says Message-ID: SHOULD be present). A message submission
agent may add them; kubemta does so only for trusted mail (an authenticated session or a client
in KUBEMTA_RELAY_NETWORKS), before the queue-manager signs it, never for mail from strangers,
which is relayed as it came. Postfix' cleanup(8) adds the same two fields, with its
`local_header_rewrite_clients` restricting it to trusted clients.

The fields are added at the end of the header section, which ends at the first empty line or
at the first line that is not a header field (RFC 5322 §2.2: a name of printable characters
other than the colon, then a colon; continuation lines start with white space). A message
without an empty line after its headers gets one, so that what follows stays its body.
Nothing else in the message changes.
"""

import re
from datetime import datetime
from email.utils import format_datetime

CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*:")  # RFC 5322 §3.6.8 ftext, then ":" (obsolete WSP allowed)
_CONTINUATION = (b" ", b"\t")
_NOT_MSG_ID = re.compile(rb"[^!-;=?-~]")  # RFC 5322 §3.6.4: printable ASCII without <, > (and no white space)


def header_section_end(content: bytes) -> tuple[int, bool]:
    """Where the header section ends in `content`, and whether an empty line is there.

    The offset is that of the first line that is not part of a header field (the empty
    separator line, or the first body line of a message that has no separator).
    """
    return _header_section(content, None)


def _header_section(content: bytes, names: set[bytes] | None) -> tuple[int, bool]:
    """`header_section_end`, adding the lower-cased names of the fields it passes to `names` (when given)."""
    offset = 0
    length = len(content)
    while offset < length:
        end = content.find(CRLF, offset)
        line_end = length if end < 0 else end
        line = content[offset:line_end]
        if not line:
            return offset, True
        match = _FIELD_NAME.match(line)
        if match is not None:
            if names is not None:
                names.add(match.group(0)[:-1].rstrip(b" \t").lower())
        elif not (offset > 0 and line.startswith(_CONTINUATION)):
            return offset, False
        if end < 0:
            return length, False
        offset = end + 2
    return offset, False


def with_missing_headers(content: bytes, *, when: datetime, message_id: str) -> bytes:
    """`content` with `Date:` (`when`) and `Message-ID:` (`<message_id>`) added where they are missing."""
    present: set[bytes] = set()
    end, has_separator = _header_section(content, present)  # one pass: where the section ends, what it has
    added = b""
    if b"date" not in present:
        added += b"Date: " + format_datetime(when).encode("ascii") + CRLF
    if b"message-id" not in present:
        safe_id = _NOT_MSG_ID.sub(b"-", message_id.encode("utf-8", "replace"))
        added += b"Message-ID: <" + safe_id + b">" + CRLF
    if not added:
        return content
    head = content[:end]
    if head and not head.endswith(CRLF):  # a header section that ends the message without a CRLF
        head += CRLF
    separator = b"" if has_separator else CRLF
    return head + added + separator + content[end:]
