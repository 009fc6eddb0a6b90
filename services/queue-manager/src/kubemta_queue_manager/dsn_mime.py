"""The MIME structure of a DSN, written as exact lines: text bodies and the multipart around them.

A text body travels as 7bit when every line is printable ASCII (tabs allowed) within
RFC 5322's line limit, else as quoted-printable (RFC 2045 §6.7) encoded here, so
that no byte of it (a bare CR, a NUL, U+2028) can end a line. The multipart boundary
(RFC 2046 §5.1.1) is random and checked to occur in no part, so no content can end
its part early or start a new one.
"""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from kubemta_queue_manager.dsn_fields import MAX_LINE, FieldValue, field_value, header_line

CRLF = "\r\n"

_QP_LINE = 76
"""RFC 2045 §6.7 rule 5: encoded lines are at most 76 characters."""


@dataclass(frozen=True, slots=True)
class Part:
    """One body part: its header lines (made by `header_line`) and its body (CRLF lines, ending with CRLF)."""

    headers: Sequence[str]
    body: bytes


def _is_7bit(line: str) -> bool:
    return len(line) <= MAX_LINE and all(char == "\t" or " " <= char <= "~" for char in line)


def _qp_line(line: bytes) -> list[str]:
    """One line as quoted-printable, split with soft line breaks (`=` at the end) into lines of <= 76."""
    segments: list[str] = []
    current = ""
    for index, byte in enumerate(line):
        trailing = index == len(line) - 1
        literal = (33 <= byte <= 126 and byte != ord("=")) or (byte in (9, 32) and not trailing)
        token = chr(byte) if literal else f"={byte:02X}"
        if len(current) + len(token) > _QP_LINE - 1:
            segments.append(current + "=")
            current = ""
        current += token
    segments.append(current)
    return segments


def text_part(lines: Sequence[str], content_type: str, description: str) -> Part:
    """A text part of `lines` (no line endings inside), 7bit when possible, else quoted-printable UTF-8."""
    if all(_is_7bit(line) for line in lines):
        cte = "7bit"
        body = "".join(line + CRLF for line in lines)
    else:
        cte = "quoted-printable"
        encoded = (_qp_line(line.encode("utf-8", "replace")) for line in lines)
        body = "".join(segment + CRLF for segments in encoded for segment in segments)
    headers = [
        header_line("Content-Type", field_value(f"{content_type}; charset=utf-8")),
        header_line("Content-Transfer-Encoding", field_value(cte)),
        header_line("Content-Description", field_value(description)),
    ]
    return Part(headers, body.encode("ascii"))


def fields_part(blocks: Sequence[Sequence[str]], content_type: str, description: str, *, utf8: bool) -> Part:
    """A part of field blocks (RFC 3464 §2.1: blocks of fields separated by empty lines); 8bit when `utf8`."""
    body = CRLF.join("".join(line + CRLF for line in block) for block in blocks).encode("utf-8")
    headers = [header_line("Content-Type", field_value(content_type))]
    if utf8 and not body.isascii():
        headers.append(header_line("Content-Transfer-Encoding", field_value("8bit")))
    headers.append(header_line("Content-Description", field_value(description)))
    return Part(headers, body)


def _boundary(parts: Sequence[Part]) -> str:
    while True:
        boundary = "=_kubemta_" + secrets.token_hex(16)
        marker = boundary.encode("ascii")
        if not any(marker in part.body or any(marker.decode() in line for line in part.headers) for part in parts):
            return boundary


def multipart(headers: Sequence[str], content_type: FieldValue, parts: Sequence[Part]) -> bytes:
    """The whole message: `headers`, then `Content-Type: content_type; boundary=...`, then the parts."""
    boundary = _boundary(parts)
    lines = [*headers, header_line("Content-Type", field_value(f'{content_type}; boundary="{boundary}"'))]
    out = ["".join(line + CRLF for line in lines).encode("utf-8"), CRLF.encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}{CRLF}".encode("ascii"))
        out.append("".join(line + CRLF for line in part.headers).encode("ascii") + CRLF.encode("ascii"))
        out.append(part.body + CRLF.encode("ascii"))
    out.append(f"--{boundary}--{CRLF}".encode("ascii"))
    return b"".join(out)
