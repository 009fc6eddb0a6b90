"""A strict reader of kubemta's DSNs for tests: the exact lines as written, and what the
email package and flufl.bounce make of them.

`read_dsn(raw)` fails the test (AssertionError) unless the DSN is well formed at every
level: CRLF lines of at most 998 octets, valid UTF-8; a top-level header of exactly
kubemta's fields, one line each; a multipart/report of exactly three parts (the third the
original headers, or the whole returned message as 7-bit message/rfc822, RET=FULL); a status
part of field blocks whose every line is `Name: value`, the per-message block exactly
kubemta's fields (Original-Envelope-Id first when the sender gave an ENVID), every recipient
block's fields in RFC 3464 §2.3's order (Original-Recipient first when there was an ORCPT);
each block's Action one of RFC 3464 §2.3.3's, one kind of report per DSN (failure, delay or
success) with a Subject to match; the email package parses it with no defect (inside a returned
message, the sender's own content, only its structure is checked), every header value readable
and on one line; flufl.bounce scans it without an error and finds no failure in a success report.
"""

import email
import email.policy
import re
from dataclasses import dataclass
from email import errors
from email.message import EmailMessage, Message
from typing import cast

from flufl.bounce import all_failures, scan_message

TOP_FIELDS = ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version", "Content-Type")
PER_MESSAGE_FIELDS = ("Reporting-MTA", "X-Kubemta-Queue-ID", "Arrival-Date")
ENVID_FIELD = "Original-Envelope-Id"
RECIPIENT_FIELD_ORDER = (
    "Original-Recipient",
    "Final-Recipient",
    "Action",
    "Status",
    "Remote-MTA",
    "Diagnostic-Code",
    "Last-Attempt-Date",
    "Will-Retry-Until",
)
"""RFC 3464 §2.3: the recipient fields kubemta writes, in its order; Final-Recipient, Action and Status always."""
PART_TYPES = ("text/plain", "message/delivery-status", "text/rfc822-headers")
GLOBAL_PART_TYPES = ("text/plain", "message/global-delivery-status", "text/rfc822-headers")
RETURNED_TYPES = ("text/rfc822-headers", "message/rfc822")
SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
KINDS = {"failed": "failure", "delayed": "delay", "delivered": "success", "relayed": "success"}

_FIELD_LINE = re.compile(r"([A-Za-z0-9-]+): (.*)", re.DOTALL)
_ALLOWED_HEADER_DEFECTS = (errors.NonASCIILocalPartDefect,)
"""Python flags a UTF-8 local part (legal under RFC 6532) as a defect."""

Field = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RawPart:
    """One body part as written: its header fields and its body bytes."""

    fields: list[Field]
    body: bytes


@dataclass(frozen=True, slots=True)
class ReadDsn:
    """A DSN as written (`fields`, `parts`, `blocks`) and as parsed (`message`, `flufl`)."""

    raw: bytes
    fields: list[Field]
    parts: list[RawPart]
    blocks: list[list[Field]]
    """The status part's field blocks, the per-message one first."""
    message: EmailMessage
    flufl: tuple[frozenset[bytes], frozenset[bytes]]
    """flufl.bounce's all_failures: (temporary, permanent) failed addresses."""

    def field(self, name: str) -> str:
        [value] = [value for key, value in self.fields if key == name]
        return value

    @property
    def recipient_blocks(self) -> list[list[Field]]:
        return self.blocks[1:]

    def part(self, index: int) -> EmailMessage:
        """Part `index` as the email package parsed it (0: human text, 1: report, 2: original headers)."""
        return cast(list[EmailMessage], self.message.get_payload())[index]

    def text(self, index: int) -> str:
        """The decoded content of part `index`."""
        return cast(str, self.part(index).get_content())

    @property
    def per_message(self) -> dict[str, str]:
        return dict(self.blocks[0])

    @property
    def kind(self) -> str:
        """ "failure", "delay" or "success"."""
        return KINDS[dict(self.blocks[1])["Action"]] if len(self.blocks) > 1 else "failure"

    @property
    def returned_message(self) -> bytes | None:
        """The whole returned message as written (a message/rfc822 third part), None when headers were returned."""
        [content_type] = [value for name, value in self.parts[2].fields if name == "Content-Type"]
        return self.parts[2].body if content_type.startswith("message/rfc822") else None

    @property
    def parsed_blocks(self) -> list[Message]:
        """The message/delivery-status blocks as the email package parsed them."""
        return cast(list[Message], self.part(1).get_payload())


def _fields(lines: list[str], where: str) -> list[Field]:
    fields = []
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)
        assert match, f"{where}: not one `Name: value` line: {line!r}"
        assert match[2].isprintable(), f"{where}: a character that is not printable: {line!r}"
        fields.append((match[1], match[2]))
    return fields


def _split(raw: bytes) -> tuple[list[Field], bytes]:
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, "no empty line after the header"
    return _fields(head.decode("utf-8").split("\r\n"), "header"), body


def _parts(body: bytes, boundary: str) -> list[RawPart]:
    delimiter = f"--{boundary}".encode()
    assert body.startswith(delimiter + b"\r\n"), "the body does not open with the boundary"
    assert body.endswith(b"\r\n" + delimiter + b"--\r\n"), "the body does not close with the boundary"
    segments = body.split(b"\r\n" + delimiter)
    segments[0] = segments[0].removeprefix(delimiter)
    assert segments.pop() == b"--\r\n"
    parts = []
    for segment in segments:
        assert segment.startswith(b"\r\n"), "text after a boundary on its line"
        fields, part_body = _split(segment[2:])
        parts.append(RawPart(fields, part_body))
    return parts


def _blocks(body: bytes) -> list[list[Field]]:
    text = body.decode("utf-8")
    assert text.endswith("\r\n"), "the status part does not end with a line ending"
    return [_fields(block.split("\r\n"), "status block") for block in text.removesuffix("\r\n").split("\r\n\r\n")]


def _parse(raw: bytes) -> EmailMessage:
    if raw.isascii():
        return email.message_from_bytes(raw, policy=email.policy.default)
    return email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)


def _own_parts(message: Message) -> list[Message]:
    """The DSN's entities, not descending into a returned message (its content is the sender's, defects and all)."""
    parts: list[Message] = [message]
    if message.is_multipart() and message.get_content_type() != "message/rfc822":
        for part in cast(list[Message], message.get_payload()):
            parts += _own_parts(part)
    return parts


def _check_parsed(message: EmailMessage, raw_fields: list[Field], part_types: tuple[str, ...]) -> None:
    for part in _own_parts(message):
        assert not part.defects, f"{part.get_content_type()}: {part.defects}"
    assert list(message.keys()) == [name for name, _ in raw_fields]
    for name in message.keys():
        value = message[name]
        assert "\r" not in str(value) and "\n" not in str(value), f"{name} reads back as several lines: {value!r}"
        defects = [d for d in getattr(value, "defects", ()) if not isinstance(d, _ALLOWED_HEADER_DEFECTS)]
        assert not defects, f"{name}: {defects}"
    parts = cast(list[EmailMessage], message.get_payload())
    types = tuple(part.get_content_type() for part in parts)
    assert types[:2] == part_types[:2] and len(types) == 3 and types[2] in RETURNED_TYPES, types


def _check_returned(part: RawPart, parsed: Message, report_kind: str) -> None:
    """A returned message: only in a failure report, 7-bit, declared so, and read back as one message."""
    if not part.fields[0][1].startswith("message/rfc822"):
        return
    assert report_kind == "failure", "a whole message returned in a delay or success report"
    assert dict(part.fields).get("Content-Transfer-Encoding", "7bit") == "7bit"
    assert part.body.isascii(), "8-bit octets in a returned message declared 7bit"
    payload = cast(list[Message], parsed.get_payload())
    assert len(payload) == 1 and isinstance(payload[0], Message)


def _check_blocks(blocks: list[list[Field]], subject: str) -> str:
    """The per-message and recipient blocks hold kubemta's fields in order, one kind of action; that kind."""
    names = [name for name, _ in blocks[0]]
    assert names in (list(PER_MESSAGE_FIELDS), [ENVID_FIELD, *PER_MESSAGE_FIELDS]), names
    kinds = set()
    for block in blocks[1:]:
        names = [name for name, _ in block]
        assert len(set(names)) == len(names), f"a field twice: {names}"
        assert all(name in RECIPIENT_FIELD_ORDER for name in names), names
        assert names == sorted(names, key=RECIPIENT_FIELD_ORDER.index), f"out of order: {names}"
        assert {"Final-Recipient", "Action", "Status"} <= set(names), names
        action = dict(block)["Action"]
        assert action in KINDS, action
        assert SUBJECTS[action] == subject, (action, subject)
        kinds.add(KINDS[action])
    assert len(kinds) == 1, f"one kind of report per DSN: {kinds}"
    return kinds.pop()


def _check_status_blocks(status: Message, blocks: list[list[Field]]) -> None:
    """The email package reads exactly the written blocks and fields, each value on one line."""
    parsed = cast(list[Message], status.get_payload())
    assert [list(block.keys()) for block in parsed] == [[name for name, _ in block] for block in blocks]
    for block in parsed:
        for name in block.keys():
            assert "\r" not in str(block[name]) and "\n" not in str(block[name]), f"{name}: {block[name]!r}"


def read_dsn(raw: bytes, *, quotes_hostile_text: bool = False) -> ReadDsn:
    """The DSN `raw`, checked to be well formed at every level (see the module docstring).

    `quotes_hostile_text`: the report was given arbitrary addresses and reply texts (a fuzz test). flufl.bounce's
    LLNL heuristic takes any line holding `, x@y,` for a failure notice, so such a text quoted in a success report
    is read as a failure there too; the caller then checks that whatever flufl finds was quoted, not made up."""
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b""), "not CRLF lines"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998, "a line longer than 998 octets"
    raw.decode("utf-8")
    fields, body = _split(raw)
    assert tuple(name for name, _ in fields) == TOP_FIELDS
    message = _parse(raw)
    assert message.get_content_type() == "multipart/report"
    boundary = message.get_boundary()
    assert boundary
    parts = _parts(body, boundary)
    report_type = message.get_param("report-type")
    assert report_type in ("delivery-status", "global-delivery-status")
    part_types = PART_TYPES if report_type == "delivery-status" else GLOBAL_PART_TYPES
    _check_parsed(message, fields, part_types)
    blocks = _blocks(parts[1].body)
    kind = _check_blocks(blocks, dict(fields)["Subject"])
    if report_type == "delivery-status":
        _check_status_blocks(cast(list[Message], message.get_payload())[1], blocks)
    _check_returned(parts[2], cast(list[Message], message.get_payload())[2], kind)
    compat = email.message_from_bytes(raw)
    temporary, permanent = all_failures(compat)
    assert scan_message(compat) == permanent
    if kind == "success" and not quotes_hostile_text:
        assert not temporary and not permanent, f"flufl.bounce read a success report as failures: {permanent}"
    return ReadDsn(raw, fields, parts, blocks, message, (frozenset(temporary), frozenset(permanent)))
