"""8-bit MIME content made 7-bit for a server without 8BITMIME (RFC 6152 §3), or the reason it cannot be.

`to_7bit(content)` takes a message (CRLF line endings, as the ingress accepts it) and returns
it with every MIME leaf part that holds 8-bit octets re-encoded, or `Unconvertible(reason)`.
It follows Postfix' 8BITMIME conversion (mime_state.c), which works line by line on the
message as it is instead of re-generating it, so that everything it does not convert stays
byte for byte what it was (no re-folded header, no re-encoded part, boundaries intact):

- a leaf part whose body has 8-bit octets and whose Content-Transfer-Encoding is an identity
  (7bit, 8bit, binary or none, RFC 2045 §6.2) is re-encoded: quoted-printable (RFC 2045 §6.7)
  for text/* and message/global* (RFC 6532 §3.7 allows it), base64 (RFC 2045 §6.8) for the
  rest, where quoted-printable makes no sense; its Content-Transfer-Encoding header is
  replaced in place, or added at the end of the part's header;
- multipart/* and message/rfc822 are recursed into (RFC 2046 §5.2.1: a message/rfc822 body
  cannot itself be encoded), and once something inside was converted their 8bit or binary
  label becomes 7bit, as Postfix does;
- a part holding no 8-bit octet is left alone, whatever its label.

What cannot be converted, and why (the caller bounces it with 5.6.3, RFC 3463 §3.6):
8-bit octets in a header field (they need SMTPUTF8, RFC 6532; unless `allow_8bit_headers`);
an 8-bit body without any MIME header field (nothing declares its type or charset: adding
MIME-Version would invent meaning; Postfix treats such a body as 7bit and sends it as it is,
which RFC 6152 §3 forbids, so kubemta refuses instead); 8-bit octets in a part already
encoded as quoted-printable or base64 (malformed), under an unknown encoding, in a multipart
preamble, epilogue or delimiter line (outside any part), in a multipart without a boundary,
in a composite type labelled with an encoding (RFC 2045 §6.4), or in message/partial,
message/external-body and the other message/* types that must stay 7bit (RFC 2046 §5.2).

Boundaries are matched as RFC 2046 §5.1.1's grammar defines a delimiter line ("--" boundary,
optional "--", optional white space), innermost first, as Python's email package does; every
line is looked at once, whatever the nesting (no recursion, no quadratic case). A converted
quoted-printable line is at most 76 characters (RFC 2045 §6.7 rule 5) and never starts a
continuation with "-", so no line it writes can look like a boundary delimiter.
"""

import base64
import binascii
import email.message
import re
from dataclasses import dataclass, field
from enum import Enum, auto

CRLF = b"\r\n"
QP_LINE_LIMIT = 76
"""RFC 2045 §6.7 rule 5: encoded lines are at most 76 characters, the soft line break's "=" included."""
IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
"""RFC 2045 §6.2: the labels that say the content is not encoded; the only ones composite types may have (§6.4)."""
EIGHT_BIT_LABELS = frozenset({"8bit", "binary"})
MIME_FIELDS = frozenset({b"mime-version", b"content-type", b"content-transfer-encoding"})
ENCODABLE_MESSAGE_TYPES = frozenset({"message/global", "message/global-headers", "message/global-delivery-status"})
"""RFC 6532 §3.7 and RFC 6533 §6: message types that may be quoted-printable or base64 encoded."""
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
"""RFC 5322 §2.2 / §4.5.3: a field name (printable ASCII but ':'), obsolete white space before the colon."""
_QP_TOKEN = re.compile(rb"=[0-9A-F]{2}|[^=]", re.DOTALL)
_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`{|}~/-]")


@dataclass(frozen=True, slots=True)
class Unconvertible:
    """Why a message cannot be made 7-bit (ASCII, for a DSN's diagnostic)."""

    reason: str


class _Kind(Enum):
    LEAF = auto()
    MULTIPART = auto()
    MESSAGE = auto()
    """message/rfc822: its body is one nested message."""
    OPAQUE = auto()
    """Content that must be sent as it is: it cannot hold 8-bit octets here."""


@dataclass(eq=False, slots=True)
class _Entity:
    default_type: str
    top: bool
    """The message or a message/rfc822 body: MIME only when it has a MIME header field (RFC 2045 §4)."""
    header: list[bytes] = field(default_factory=list)
    blank: bool = False
    reading_header: bool = True
    kind: _Kind = _Kind.LEAF
    content_type: str = "text/plain"
    encoding: str = "7bit"
    boundary: bytes | None = None
    mime: bool = True
    body: "list[bytes | _Entity]" = field(default_factory=list)
    changed: bool = False


def to_7bit(content: bytes, *, allow_8bit_headers: bool = False) -> bytes | Unconvertible:
    """`content` with its 8-bit MIME parts re-encoded (itself when it is 7-bit already), or why it cannot be."""
    if content.isascii():
        return content
    root = _parse(content.split(CRLF))
    entities = _preorder(root)
    for entity in entities:
        refusal = _refusal(entity, allow_8bit_headers)
        if refusal is not None:
            return Unconvertible(refusal)
    encoded: dict[_Entity, tuple[bytes, list[bytes]]] = {}
    for entity in reversed(entities):  # children before their parents
        if entity.kind is _Kind.LEAF and not _all_ascii(entity.body):
            encoded[entity] = _encode_leaf(entity)
            entity.changed = True
        elif entity.kind in (_Kind.MULTIPART, _Kind.MESSAGE):
            entity.changed = any(isinstance(item, _Entity) and item.changed for item in entity.body)
    if not encoded:
        return content
    return CRLF.join(_emit(root, encoded))


# -- parsing ------------------------------------------------------------------------------------


def _parse(lines: list[bytes]) -> _Entity:
    """The entity tree of a message's lines, every line kept in exactly one place."""
    root = _Entity("text/plain", top=True)
    stack = [root]
    active: dict[bytes, list[_Entity]] = {}
    for line in lines:
        if active and line[:2] == b"--":
            owner, closing = _delimiter(line, active)
            if owner is not None:
                while stack[-1] is not owner:
                    _unregister(stack.pop(), active)
                owner.body.append(line)
                if closing:
                    _unregister(owner, active)
                else:
                    child = _Entity(
                        "message/rfc822" if owner.content_type == "multipart/digest" else "text/plain", False
                    )
                    owner.body.append(child)
                    stack.append(child)
                continue
        while True:
            entity = stack[-1]
            if not entity.reading_header:
                entity.body.append(line)
                break
            if not line:
                entity.blank = True
                _end_header(entity, stack, active)
                break
            if (line[:1] in (b" ", b"\t") and entity.header) or _FIELD.match(line):
                entity.header.append(line)
                break
            _end_header(entity, stack, active)  # a line that is no header field starts the body
    return root


def _delimiter(line: bytes, active: dict[bytes, list[_Entity]]) -> tuple[_Entity | None, bool]:
    """The multipart whose delimiter (or close delimiter) `line` is, innermost first (RFC 2046 §5.1.1)."""
    candidate = line[2:].rstrip(b" \t")
    owners = active.get(candidate)
    if owners:
        return owners[-1], False
    if candidate.endswith(b"--"):
        owners = active.get(candidate[:-2])
        if owners:
            return owners[-1], True
    return None, False


def _unregister(entity: _Entity, active: dict[bytes, list[_Entity]]) -> None:
    """Stop listening for `entity`'s boundary (closed, or ended by an enclosing delimiter)."""
    boundary = entity.boundary
    owners = active.get(boundary) if boundary is not None else None
    if boundary is not None and owners and entity in owners:
        owners.remove(entity)
        if not owners:
            del active[boundary]


def _end_header(entity: _Entity, stack: list[_Entity], active: dict[bytes, list[_Entity]]) -> None:
    """Read the header block's MIME fields; a multipart starts listening for its boundary, a message/rfc822 for
    the header of the message it holds."""
    entity.reading_header = False
    fields = _fields(entity.header)
    if entity.top:
        entity.mime = any(name in MIME_FIELDS for name, _ in fields)
    content_type = next((value for name, value in fields if name == b"content-type"), None)
    encoding = next((value for name, value in fields if name == b"content-transfer-encoding"), None)
    entity.content_type, boundary = _content_type(content_type, entity.default_type)
    entity.encoding = _encoding(encoding)
    entity.kind = _kind(entity.content_type, entity.encoding, boundary)
    if entity.kind is _Kind.MULTIPART and boundary is not None:
        entity.boundary = boundary
        active.setdefault(boundary, []).append(entity)
    elif entity.kind is _Kind.MESSAGE:
        child = _Entity("text/plain", top=True)
        entity.body.append(child)
        stack.append(child)


def _fields(header: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(lower-case name, unfolded value) of each field of a header block."""
    fields: list[tuple[bytes, bytes]] = []
    for line in header:
        match = _FIELD.match(line)
        if match is not None:
            fields.append((match.group(1).lower(), line[match.end() :]))
        elif fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
    return fields


def _content_type(value: bytes | None, default: str) -> tuple[str, bytes | None]:
    """The lower-case type/subtype (RFC 2045 §5.2: text/plain when invalid) and a multipart's boundary.

    The type is read as the email package's get_content_type() reads it; the boundary by its get_boundary()
    (quoting, RFC 2231 continuations), asked only of multipart types: it is the slow part.
    """
    if value is None:
        return default, None
    content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
    if content_type.count("/") != 1:
        return "text/plain", None
    if not content_type.startswith("multipart/"):
        return content_type, None
    message = email.message.Message()
    message["Content-Type"] = value.replace(b"\r", b" ").replace(b"\n", b" ").decode("latin-1")
    try:
        boundary = message.get_boundary()
        return content_type, boundary.encode("latin-1") if boundary else None
    except Exception:  # the email package's parameter parsing on hostile input; or an RFC 2231 value beyond Latin-1
        return content_type, None


def _encoding(value: bytes | None) -> str:
    """The Content-Transfer-Encoding mechanism, lower case (RFC 2045 §6.1); "7bit" when missing (§6.1)."""
    if value is None:
        return "7bit"
    words = value.decode("ascii", "replace").replace("(", " ").replace(";", " ").split()
    return words[0].lower() if words else "7bit"


def _kind(content_type: str, encoding: str, boundary: bytes | None) -> _Kind:
    main = content_type.partition("/")[0]
    if main == "multipart":
        return _Kind.MULTIPART if boundary is not None and encoding in IDENTITY_ENCODINGS else _Kind.OPAQUE
    if content_type == "message/rfc822":
        return _Kind.MESSAGE if encoding in IDENTITY_ENCODINGS else _Kind.OPAQUE
    if main == "message" and content_type not in ENCODABLE_MESSAGE_TYPES:
        return _Kind.OPAQUE
    return _Kind.LEAF


def _preorder(root: _Entity) -> list[_Entity]:
    order: list[_Entity] = []
    todo = [root]
    while todo:
        entity = todo.pop()
        order.append(entity)
        todo.extend(reversed([item for item in entity.body if isinstance(item, _Entity)]))
    return order


# -- deciding -----------------------------------------------------------------------------------


def _all_ascii(items: "list[bytes | _Entity]") -> bool:
    return all(item.isascii() for item in items if isinstance(item, bytes))


def _refusal(entity: _Entity, allow_8bit_headers: bool) -> str | None:
    """Why this entity (its header and its own lines, not its children's) cannot be made 7-bit, or None."""
    if not allow_8bit_headers and not all(line.isascii() for line in entity.header):
        return "8-bit octets in a header field, which only SMTPUTF8 can carry (RFC 6532)"
    if _all_ascii(entity.body):
        return None
    kind, encoding, content_type = entity.kind, entity.encoding, entity.content_type
    if kind is _Kind.MULTIPART:
        return "8-bit octets in a multipart preamble, epilogue or delimiter line, outside any part (RFC 2046 5.1.1)"
    if kind is _Kind.OPAQUE:
        if content_type.startswith("multipart/") and encoding in IDENTITY_ENCODINGS:
            return f"8-bit octets in a {_safe(content_type)} entity without a boundary (RFC 2046 section 5.1.1)"
        if encoding not in IDENTITY_ENCODINGS:
            return (
                f"8-bit octets in a {_safe(content_type)} entity labelled {_safe(encoding)}: composite types take "
                "7bit, 8bit or binary only (RFC 2045 section 6.4)"
            )
        return f"8-bit octets in a {_safe(content_type)} part, which cannot be re-encoded (RFC 2046 section 5.2)"
    if not entity.mime:
        return (
            "8-bit octets in a body without MIME header fields: no type or charset to encode it by (RFC 2045 section 4)"
        )
    if encoding in ("quoted-printable", "base64"):
        return f"8-bit octets in a part already encoded as {encoding} (malformed, RFC 2045 sections 6.7, 6.8)"
    if encoding not in IDENTITY_ENCODINGS:
        return f"8-bit octets in a part with the unknown Content-Transfer-Encoding {_safe(encoding)}"
    return None


def _safe(text: str) -> str:
    """A MIME token from the message, fit for a diagnostic: token characters only, at most 60."""
    return _TOKEN_CHARS.sub("?", text)[:60]


# -- encoding and writing -----------------------------------------------------------------------


def _encode_leaf(entity: _Entity) -> tuple[bytes, list[bytes]]:
    """The new Content-Transfer-Encoding of a leaf with 8-bit octets and its encoded body lines."""
    lines = [item for item in entity.body if isinstance(item, bytes)]
    if entity.content_type.startswith("text/") or entity.content_type in ENCODABLE_MESSAGE_TYPES:
        return b"quoted-printable", [encoded for line in lines for encoded in qp_lines(line)]
    encoded = base64.encodebytes(CRLF.join(lines)).split(b"\n")[:-1]
    if lines and not lines[-1]:
        encoded.append(b"")  # the body ended with a line break: so does its encoding
    return b"base64", encoded


def qp_lines(line: bytes) -> list[bytes]:
    """One line of text as quoted-printable lines (RFC 2045 §6.7): the last one ends the original line (a hard
    line break), the others end in a soft line break "="; a continuation never starts with "-"."""
    physical = binascii.b2a_qp(line, istext=False).split(b"=\n")  # istext=False: bare CR and LF are encoded
    if not any(part.startswith(b"-") for part in physical[1:]):
        return [part + b"=" for part in physical[:-1]] + [physical[-1]]
    lines: list[bytes] = []
    current = b""
    for token in _QP_TOKEN.findall(b"".join(physical)):
        if len(current) + len(token) > QP_LINE_LIMIT - 1:
            lines.append(current + b"=")
            current = b"=2D" if token == b"-" else token
        else:
            current += token
    lines.append(current)
    return lines


def _emit(root: _Entity, encoded: dict[_Entity, tuple[bytes, list[bytes]]]) -> list[bytes]:
    """Every line of the message, each entity's header and body in order, converted ones re-encoded."""
    out: list[bytes] = []
    todo: list[bytes | _Entity] = [root]
    while todo:
        item = todo.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        label = encoded[item][0] if item in encoded else b"7bit" if _relabel(item) else None
        out.extend(item.header if label is None else _with_encoding(item.header, label))
        if item.blank or (label is not None and item.body):
            out.append(b"")
        if item in encoded:
            out.extend(encoded[item][1])
        else:
            todo.extend(reversed(item.body))
    return out


def _relabel(entity: _Entity) -> bool:
    """A composite entity labelled 8bit or binary whose content was converted is now 7bit (as Postfix does)."""
    return entity.changed and entity.kind is not _Kind.LEAF and entity.encoding in EIGHT_BIT_LABELS


def _with_encoding(header: list[bytes], label: bytes) -> list[bytes]:
    """`header` with its Content-Transfer-Encoding field(s) replaced by one saying `label`, in place of the first
    (appended when there was none); every other line unchanged."""
    out: list[bytes] = []
    new_field = b"Content-Transfer-Encoding: " + label
    replaced = skipping = False
    for line in header:
        match = _FIELD.match(line)
        if match is None:  # a continuation line of the field before
            if not skipping:
                out.append(line)
            continue
        skipping = match.group(1).lower() == b"content-transfer-encoding"
        if not skipping:
            out.append(line)
        elif not replaced:
            out.append(new_field)
            replaced = True
    if not replaced:
        out.append(new_field)
    return out


__all__ = ["Unconvertible", "qp_lines", "to_7bit"]
