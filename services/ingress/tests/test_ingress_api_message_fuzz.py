"""Hypothesis fuzzing of the POST /v1/messages message: whatever text, names, subjects, file names and header
values a caller sends, a request is either refused (ValidationError, InvalidMessage) or becomes a message whose
every line is at most 998 octets, CRLF-terminated, without NUL, that the email package parses without defects,
with no header field the request did not ask for, and whose text reads back as sent. Raw bodies likewise are
refused or queued sound, never with a Bcc: field."""

import base64
import email
import email.message
import email.policy
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubemta_ingress.api_message import compose
from kubemta_ingress.api_message_model import InvalidMessage, MessageRequest
from kubemta_ingress.api_message_raw import parse_raw
from kubemta_ingress.content import content_problem
from kubemta_ingress.policy import check_address
from kubemta_ingress.sender_identity import header_fields

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COMPOSED_FIELDS = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version", "content-type"}
COMPOSED_FIELDS |= {"content-transfer-encoding"}

# Text that tries to break headers: line breaks of every kind, header syntax, encoded-word syntax, non-ASCII.
NASTY = list("aZ09 :;,<>\"'\\@=?_-.\t\r\n\0\x0b\x0c\x1c\x85\u2028\u2029\u202eé€🙂\u200d")
nasty_text = st.text(alphabet=st.sampled_from(NASTY) | st.characters(), max_size=120)


@st.composite
def encoded_word(draw: st.DrawFn) -> str:
    """An RFC 2047 encoded word of arbitrary bytes (line breaks and NUL included), Q or B encoded."""
    data = draw(st.binary(max_size=30))
    if draw(st.booleans()):
        return "=?utf-8?q?" + "".join(f"={byte:02X}" for byte in data) + "?="
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + "?="


printable_text = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=200)
header_text = st.one_of(
    nasty_text,
    printable_text,
    st.builds(lambda a, w, b: a + w + b, nasty_text, encoded_word(), nasty_text),
    st.text(min_size=900, max_size=1100),  # long values: folding or the limits
    st.text(alphabet="ab ", min_size=1, max_size=1000),
)
body_text = st.one_of(nasty_text, st.text(max_size=3000), st.text(alphabet="x\r\n é", max_size=5000))
addresses = st.sampled_from(["bob@example.org", "jörg@bücher.example", '"a b"@example.org', "ops@[192.0.2.1]"])


def mailbox(draw: st.DrawFn) -> dict[str, Any]:
    box: dict[str, Any] = {"address": draw(addresses)}
    if draw(st.booleans()):
        box["name"] = draw(header_text)
    return box


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"from": mailbox(draw), "to": [mailbox(draw) for _ in range(draw(st.integers(1, 3)))]}
    if draw(st.booleans()):
        body["bcc"] = [mailbox(draw)]
    if draw(st.booleans()):
        body["subject"] = draw(header_text)
    body["text"] = draw(body_text)
    if draw(st.booleans()):
        body["html"] = draw(body_text)
    if draw(st.booleans()):
        body["headers"] = {draw(st.sampled_from(["X-A", "List-Unsubscribe", "x-b"])): draw(header_text)}
    attachments = []
    for index in range(draw(st.integers(0, 2))):
        attachment: dict[str, Any] = {"filename": draw(header_text), "content": draw(st.binary(max_size=200))}
        if "html" in body and draw(st.booleans()):
            attachment["content_id"] = f"part{index}@example.com"
        attachments.append(attachment)
    body["attachments"] = attachments
    return body


def read(content: bytes) -> email.message.EmailMessage:
    if content.isascii():
        message = email.message_from_bytes(content, policy=email.policy.default)
    else:
        message = email.message_from_string(content.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def squash(text: str) -> str:
    """White space as folding may change it."""
    return " ".join(text.split())


def field_names(content: bytes) -> set[str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    return {line.split(b":", 1)[0].decode().lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}


@FUZZ
@given(requests())
def test_any_accepted_request_becomes_a_sound_message(body: dict[str, Any]) -> None:
    try:
        request = MessageRequest.model_validate(body, context={"max_recipients": 10})
        message = compose(request, now=NOW, message_id="<Q1@mta.example>")
    except (ValidationError, InvalidMessage) as refusal:
        event(f"refused by {type(refusal).__name__}")
        return
    event("composed")
    assert content_problem(message.content) is None  # CRLF only, no NUL, every line <= 998 octets
    parsed = read(message.content)
    for part in parsed.walk():
        assert not part.defects, (part.defects, message.content[:2000])
    assert field_names(message.content) <= COMPOSED_FIELDS | {name.lower() for name in request.headers}
    assert message.smtputf8 or message.content.isascii()  # raw UTF-8 only in an SMTPUTF8 message
    if request.subject is not None and "=?" not in request.subject:
        assert squash(parsed["Subject"]) == squash(request.subject)
    for name in ("From", "To"):
        written = [(a.display_name, a.addr_spec) for a in parsed[name].addresses]
        mailboxes = [request.from_] if name == "From" else request.to
        assert [addr for _, addr in written] == [box.address for box in mailboxes]
        for (display, _), box in zip(written, mailboxes, strict=True):
            if box.name is not None and "=?" not in box.name:
                assert "".join(display.split()) == "".join(box.name.split())  # see api_message._reads_back
    inline_first = sorted(request.attachments, key=lambda attachment: attachment.content_id is None)
    for sent, attached in zip(inline_first, _attachments(parsed), strict=True):
        assert attached.get_payload(decode=True) == sent.content
        if "=?" not in sent.filename:
            assert attached.get_filename() == sent.filename
    if request.text is not None:
        plain = next(part for part in parsed.walk() if part.get_content_type() == "text/plain")
        assert plain.get_content().replace("\r\n", "\n") == _as_lines(request.text)


def _attachments(parsed: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    """The parts that came from `attachments`, in request order: inline ones first (as composed), then files."""
    parts = [part for part in parsed.walk() if part.get_content_disposition() in ("inline", "attachment")]
    return [part for part in parts if isinstance(part, email.message.EmailMessage)]


def _as_lines(text: str) -> str:
    """`text` as set_content writes it: lines split at CR, LF or CRLF, each ended by one line break."""
    return "".join(line.decode("utf-8") + "\n" for line in text.encode("utf-8").splitlines()) or "\n"


@FUZZ
@given(st.lists(header_text, min_size=1, max_size=3))
def test_no_header_text_ever_adds_a_field(values: list[str]) -> None:
    body = {
        "from": {"address": "app@example.com", "name": values[0]},
        "to": [{"address": "bob@example.org"}],
        "subject": values[-1],
        "text": "x",
        "headers": {"X-Value": values[len(values) // 2]},
        "attachments": [{"filename": values[0], "content": ""}],
    }
    try:
        message = compose(MessageRequest.model_validate(body), now=NOW, message_id="<Q1@mta.example>")
    except (ValidationError, InvalidMessage) as refusal:
        event(f"refused by {type(refusal).__name__}")
        return
    event("composed")
    assert field_names(message.content) <= COMPOSED_FIELDS | {"x-value"}
    assert header_fields(message.content, b"bcc") == []
    assert content_problem(message.content) is None


raw_line = st.one_of(
    st.sampled_from([b"From: a@example.com", b"To: b@example.org", b"Bcc: c@example.net", b" d@example.net", b""]),
    st.binary(max_size=80),
    st.text(alphabet=st.sampled_from(NASTY), max_size=40).map(lambda text: text.encode("utf-8")),
)


raw_head = st.sampled_from([[], [b"From: a@example.com"], [b"From: a@example.com", b"To: b@example.org"]])


@FUZZ
@given(raw_head, st.lists(raw_line, max_size=12), st.sampled_from([b"\r\n", b"\n"]), st.booleans())
def test_raw_bodies_are_refused_or_queued_sound_without_bcc(
    head: list[bytes], lines: list[bytes], eol: bytes, query: bool
) -> None:
    body = eol.join(head + lines)
    try:
        message = parse_raw(
            body,
            envelope_from="bounce@example.com" if query else None,
            recipients=["x@example.org"] if query else None,
        )
    except InvalidMessage as refusal:
        assert refusal.loc[0] in ("body", "query") and refusal.detail
        event("refused")
        return
    event("queued")
    assert content_problem(message.content) is None
    assert header_fields(message.content, b"bcc") == []
    assert message.recipients and all(check_address(r, smtputf8=True) is None for r in message.recipients)
    assert check_address(message.sender, smtputf8=True) is None
