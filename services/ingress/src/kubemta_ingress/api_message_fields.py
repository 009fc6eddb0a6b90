"""The fields of a `POST /v1/messages` request one by one: limits, checks, and the error type of the route.

Each check is a plain function used as a pydantic validator by api_message_model.py, so a
refusal is a 422 entry naming the field. `InvalidMessage` is what composing and raw parsing
raise for what only they can find; `errors()` and `request_errors()` give both kinds in
FastAPI's own 422 shape (`loc` under "body" or "query", `msg`, `type`), without echoing the
input (an attachment would come back whole).

Text that goes into a header line (display names, subject, extra header values, attachment
file names) holds no control character but TAB, and no U+2028/U+2029: CR, LF and NUL would
start a new header field (header injection), and programs that split lines with
`str.splitlines` break at VT, FF, FS..RS, NEL and U+2028/9 too (the email package itself
refuses them in a header value). Refused, never rewritten. File names also refuse path
separators and bidirectional controls (`invoice\u202efdp.exe` shows as `invoiceexe.pdf`).
"""

import base64
import binascii
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from kubemta_ingress.policy import AddressProblem, check_address

DEFAULT_MAX_RECIPIENTS = 1000
"""The recipient limit when the caller passes none (KUBEMTA_MAX_RECIPIENTS' default)."""
MAX_LINE = 998  # RFC 5322 section 2.1.1: octets in a line, CRLF not counted
MAX_SUBJECT = 998
MAX_ATTACHMENTS = 100
MAX_HEADERS = 50
MAX_HEADER_NAME = 76
MAX_TAGS = 10
MAX_ADDRESS = 254  # RFC 5321 section 4.5.3.1.3: a path is at most 256 octets, angle brackets included
MAX_NAME = 256
MAX_FILENAME = 255

# Fields kubemta writes itself, or trace and authentication fields only a receiving server adds (RFC 5322
# section 3.6, RFC 2045, RFC 6376, RFC 8617, RFC 8601, RFC 7208); the value says what to use instead.
RESERVED_HEADERS: dict[str, str] = {
    "from": "use the `from` field",
    "sender": "kubemta does not set a Sender: distinct from From:",
    "to": "use the `to` field",
    "cc": "use the `cc` field",
    "bcc": "use the `bcc` field (Bcc: never appears in the message)",
    "reply-to": "use the `reply_to` field",
    "subject": "use the `subject` field",
    "date": "kubemta sets Date: when it accepts the message",
    "message-id": "use the `message_id` field",
    "mime-version": "kubemta writes the MIME structure",
    "received": "a trace field only a receiving server adds",
    "return-path": "a trace field only the final delivery adds",
    "dkim-signature": "kubemta signs after composing (KUBEMTA_DKIM_KEYS_DIR)",
    "domainkey-signature": "an authentication field only a signer adds",
    "authentication-results": "an authentication field only a receiving server adds",
    "received-spf": "an authentication field only a receiving server adds",
}
RESERVED_PREFIXES: dict[str, str] = {
    "content-": "kubemta writes the MIME structure (use `attachments`)",
    "arc-": "an ARC field (RFC 8617) only a forwarding server adds",
    "resent-": "a resent field (RFC 5322 section 3.6.6) belongs to re-sending, not to a new message",
}

_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 section 3.6.8 ftext
_TAG = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,64}"  # RFC 6838 section 4.2 restricted-name
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}\Z")
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"  # RFC 5322 section 3.2.3
_MSG_ID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])>\Z")  # RFC 5322 section 3.6.4 msg-id
_CONTENT_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,250}\Z")  # msg-id characters, without <>
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SURROGATE = re.compile("[\ud800-\udfff]")
"""Unicode's category Cs: a lone surrogate (a JSON string may escape one; it is no character)."""
_NOT_HEADER_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
"""What header text may not hold: Unicode's category Cc (the C0 and C1 controls and DEL) but TAB, the line and
paragraph separators U+2028/9, and Cs (lone surrogates). One regular expression search instead of a category
lookup per character (the API's bodies and headers are checked on every request)."""


class InvalidMessage(Exception):
    """A request kubemta will not queue: `loc` and `detail` as FastAPI reports a 422 (`errors()`).

    `field` is a dotted path inside `source` ("attachments.2.filename", "" for the whole body).
    """

    def __init__(self, field: str, detail: str, *, source: str = "body") -> None:
        super().__init__(f"{field or source}: {detail}")
        self.field = field
        self.detail = detail
        self.loc: tuple[str | int, ...] = (source, *(int(p) if p.isdigit() else p for p in field.split(".") if p))

    def errors(self) -> list[dict[str, Any]]:
        """The 422 `detail` list: `[{"loc": ["body", ...], "msg": ..., "type": "value_error"}]`."""
        return [{"loc": list(self.loc), "msg": self.detail, "type": "value_error"}]


def request_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A pydantic error of `parse_request` as FastAPI's 422 `detail` list (loc under "body"; no input echoed)."""
    return [{"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]} for error in exc.errors()]


def header_text_problem(value: str) -> str | None:
    """Why `value` may not go into a header line, or None (no controls but TAB, no U+2028/9, valid Unicode)."""
    found = _NOT_HEADER_TEXT.search(value)
    if found is None:
        return None
    ch = found.group()
    if unicodedata.category(ch) == "Cs":
        return f"holds the lone surrogate U+{ord(ch):04X}"
    return f"holds the control character U+{ord(ch):04X}; header text may hold no CR, LF, NUL or other control"


def _header_text(value: str) -> str:
    problem = header_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _address(value: str) -> str:
    problem = check_address(value, smtputf8=True)
    if problem is AddressProblem.SYNTAX:
        raise ValueError(f"not a valid mail address (local-part@domain, RFC 5321 section 4.1.2): {value!r}")
    return value


def check_body_text(value: str) -> str:
    if "\0" in value:
        raise ValueError("may not hold NUL (U+0000)")
    if _SURROGATE.search(value):
        raise ValueError("holds a lone surrogate: not valid Unicode")
    return value


def _filename(value: str) -> str:
    _header_text(value)
    if "/" in value or "\\" in value:
        raise ValueError("a file name may not hold a path separator (/ or \\)")
    if value.strip(" .") == "":
        raise ValueError("a file name needs a character other than dots and spaces")
    if value != value.strip():
        raise ValueError("a file name may not start or end with white space (mail programs drop it)")
    if bidi := _BIDI_CONTROLS.intersection(value):
        raise ValueError(f"a file name may not hold bidirectional controls ({', '.join(sorted(map(_hex, bidi)))})")
    return value


def _hex(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def check_content_type(value: str) -> str:
    if not _CONTENT_TYPE.match(value):
        raise ValueError(f"not a MIME type/subtype without parameters: {value!r}")
    value = value.lower()
    if value.startswith(("multipart/", "message/")):
        raise ValueError(f"{value} cannot be an attachment (send it as application/octet-stream)")
    return value


def _base64(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("attachment content must be a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)  # whitespace (MIME line breaks) ignored
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64 (RFC 4648 section 4): {exc}") from None


def check_header_name(value: str) -> str:
    if not _HEADER_NAME.match(value) or len(value) > MAX_HEADER_NAME:
        raise ValueError(
            f"not a header field name (1..{MAX_HEADER_NAME} printable ASCII characters but colon): {value!r}"
        )
    lower = value.lower()
    reason = RESERVED_HEADERS.get(lower) or next((r for p, r in RESERVED_PREFIXES.items() if lower.startswith(p)), None)
    if reason is not None:
        raise ValueError(f"header {value!r} may not be set in `headers`: {reason}")
    return value


def check_tag(value: str) -> str:
    if not _TAG.match(value):
        raise ValueError(f"a tag is 1..64 characters of A-Z a-z 0-9 . _ : -, not {value!r}")
    return value


def check_message_id(value: str) -> str:
    if len(value) > MAX_LINE - len("Message-ID: ") or not _MSG_ID.match(value):
        raise ValueError(f"not a message id <id-left@id-right> (RFC 5322 section 3.6.4): {value!r}")
    return value


def check_content_id(value: str) -> str:
    if not _CONTENT_ID.match(value):
        raise ValueError(f"a content id is 1..250 characters of a message id, without <>: {value!r}")
    return value


Address = Annotated[
    str,
    Field(min_length=3, max_length=MAX_ADDRESS, examples=["ada@example.com"]),
    AfterValidator(_address),
]
HeaderText = Annotated[str, AfterValidator(_header_text)]
DisplayName = Annotated[str, Field(max_length=MAX_NAME), AfterValidator(_header_text)]
Subject = Annotated[str, Field(max_length=MAX_SUBJECT), AfterValidator(_header_text)]
Filename = Annotated[str, Field(min_length=1, max_length=MAX_FILENAME), AfterValidator(_filename)]
Base64Content = Annotated[
    bytes,
    PlainValidator(_base64),
    PlainSerializer(lambda content: base64.b64encode(content).decode("ascii"), return_type=str),
    WithJsonSchema({"type": "string", "contentEncoding": "base64", "examples": ["SGVsbG8sIHdvcmxkIQ=="]}),
]
