"""The Message-ID header of a message as the client sent it, read once and bounded, for logs,
lifecycle events and the duplicate check (dedup_key.py).

RFC 5322 section 3.6.4: at most one Message-ID field, in the header block. Only the header
block is read (up to the first empty line), and only the first Message-ID field in it;
folded lines are unfolded (section 2.2.3); CR, LF and NUL are removed; the value is cut at
998 characters (section 2.1.1's line limit), so a hostile client can neither make the
ingress read its body nor put an unbounded or multi-line value into a log line or an event.
The value is kept as written (angle brackets included), not parsed: it identifies the
message, it is not interpreted.
"""

MAX_MESSAGE_ID = 998
"""RFC 5322 section 2.1.1: a line is at most 998 characters; a Message-ID never needs more."""
MAX_EVENT_HEADERS = 16 * 1024
"""Most bytes of the header block a `received` event carries (for `show`)."""

_FIELD = b"message-id"
_WSP = (b" ", b"\t")


def header_block(content: bytes) -> bytes:
    """The header block of `content` (CRLF line endings): everything before the empty line that ends it, with
    the last header line's CRLF; the whole of `content` when it has no empty line (a message without a body)."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def message_id(content: bytes) -> str:
    """The first Message-ID field's value in the header block of `content`, unfolded and cleaned; "" if none."""
    lines = header_block(content).split(b"\r\n")
    for index, line in enumerate(lines):
        if line[:1] in _WSP:
            continue  # a continuation line of some other field
        name, colon, value = line.partition(b":")
        if not colon or name.rstrip(b" \t").lower() != _FIELD:
            continue
        parts = [value]
        for continuation in lines[index + 1 :]:
            if continuation[:1] not in _WSP:
                break
            parts.append(continuation)  # unfolding: the CRLF before the whitespace goes (section 2.2.3)
            if sum(len(part) for part in parts) > 4 * MAX_MESSAGE_ID:
                break
        return clean(b"".join(parts))
    return ""


def clean(value: bytes) -> str:
    """A header value as a bounded, single-line, valid UTF-8 string."""
    for control in (b"\r", b"\n", b"\0"):
        value = value.replace(control, b"")
    return value.decode("utf-8", "replace").strip(" \t")[:MAX_MESSAGE_ID]


def event_headers(content: bytes) -> bytes:
    """The header block a `received` event carries: the message's own, cut at `MAX_EVENT_HEADERS` bytes."""
    return header_block(content[: MAX_EVENT_HEADERS + 4])[:MAX_EVENT_HEADERS]
