"""POST /v1/messages, the message: MessageRequest's refusals, compose() round-tripped through the email package,
and parse_raw() for message/rfc822 bodies."""

import base64
import email
import email.message
import email.policy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from kubemta_ingress.api_message import ComposedMessage, compose
from kubemta_ingress.api_message_model import (
    MAX_ATTACHMENTS,
    MAX_HEADERS,
    MAX_SUBJECT,
    MAX_TAGS,
    RESERVED_HEADERS,
    InvalidMessage,
    MessageRequest,
    parse_request,
    request_errors,
)
from kubemta_ingress.api_message_raw import parse_raw
from kubemta_ingress.content import content_problem

NOW = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
MSGID = "<Q1@mta.example>"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
PDF = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) * 3


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": {"address": "app@example.com", "name": "The App"},
        "to": [{"address": "bob@example.org"}],
        "subject": "Hello",
        "text": "Hello Bob\n",
    }
    body.update(fields)
    return {key: value for key, value in body.items() if value is not None}


def parse(body: dict[str, Any], max_recipients: int = 50) -> MessageRequest:
    return parse_request(json.dumps(body), max_recipients=max_recipients)


def build(body: dict[str, Any], max_recipients: int = 50) -> ComposedMessage:
    return compose(parse(body, max_recipients), now=NOW, message_id=MSGID)


def read(content: bytes) -> email.message.EmailMessage:
    """The message as a mail program reads it (raw UTF-8 headers decoded as UTF-8)."""
    if content.isascii():
        message = email.message_from_bytes(content, policy=email.policy.default)
    else:
        message = email.message_from_string(content.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def text_of(part: email.message.MIMEPart) -> str:
    """A text part's content with the line ends a program sees (the CRLF of 7bit parts read as LF)."""
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def errors(body: dict[str, Any] | str, max_recipients: int = 50) -> list[dict[str, Any]]:
    raw = body if isinstance(body, str) else json.dumps(body)
    with pytest.raises(ValidationError) as caught:
        parse_request(raw, max_recipients=max_recipients)
    return request_errors(caught.value)


def refused(body: dict[str, Any], max_recipients: int = 50) -> str:
    """The messages of every error, one string, for `in` checks."""
    return " | ".join(f"{error['loc']} {error['msg']}" for error in errors(body, max_recipients))


def compose_refusal(body: dict[str, Any]) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        build(body)
    return caught.value


def header_names(content: bytes) -> list[str]:
    head = content.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[0].decode() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]


def assert_sound(content: bytes) -> None:
    assert content_problem(content) is None  # CRLF only, no NUL, no line over 998 octets
    message = read(content)
    for part in message.walk():
        assert not part.defects, part.defects


# --- compose: structure and round trips ---------------------------------------------------------------------------


def test_a_text_message_has_every_header_and_no_bcc() -> None:
    message = build(
        request(
            cc=[{"address": "carol@example.org", "name": "Carol"}],
            bcc=[{"address": "secret@example.net"}],
            reply_to={"address": "help@example.com"},
        )
    )
    assert message.sender == "app@example.com"
    assert message.recipients == ["bob@example.org", "carol@example.org", "secret@example.net"]
    assert message.message_id == MSGID
    assert message.smtputf8 is False
    assert header_names(message.content)[:8] == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "Content-Type",
    ]
    parsed = read(message.content)
    assert parsed["From"] == "The App <app@example.com>"
    assert parsed["To"] == "bob@example.org"
    assert parsed["Cc"] == "Carol <carol@example.org>"
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed["Date"].datetime == NOW
    assert parsed["Message-ID"] == MSGID
    assert parsed["MIME-Version"] == "1.0"
    assert parsed.get_content_type() == "text/plain"
    assert text_of(parsed) == "Hello Bob\n"
    assert b"secret" not in message.content and b"bcc" not in message.content.lower()
    assert_sound(message.content)


def test_bcc_only_recipients_never_appear_in_the_content() -> None:
    message = build(request(to=None, bcc=[{"address": "hidden@example.net", "name": "Hidden Person"}]))
    assert message.recipients == ["hidden@example.net"]
    assert b"hidden" not in message.content.lower() and b"Hidden" not in message.content
    assert "To" not in header_names(message.content)
    assert_sound(message.content)


def test_recipients_are_deduplicated_like_rcpt_keeping_the_first_spelling() -> None:
    message = build(
        request(
            to=[{"address": "Bob@Example.org"}, {"address": "bob@example.org"}],
            cc=[{"address": "BOB@EXAMPLE.ORG"}, {"address": "jörg@bücher.example"}],
            bcc=[{"address": "JÖRG@xn--bcher-kva.example"}, {"address": "other@example.org"}],
        )
    )
    assert message.recipients == ["Bob@Example.org", "jörg@bücher.example", "other@example.org"]


def test_envelope_from_overrides_the_from_address_as_bounce_address() -> None:
    message = build(request(envelope_from="bounces+42@example.com"))
    assert message.sender == "bounces+42@example.com"
    assert read(message.content)["From"].addresses[0].addr_spec == "app@example.com"


def test_text_and_html_are_an_alternative() -> None:
    message = build(request(html="<p>Hello <b>Bob</b></p>\n"))
    parsed = read(message.content)
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.iter_parts()
    assert (plain.get_content_type(), text_of(plain)) == ("text/plain", "Hello Bob\n")
    assert (html.get_content_type(), text_of(html)) == ("text/html", "<p>Hello <b>Bob</b></p>\n")
    assert "MIME-Version" not in plain and "MIME-Version" not in html  # only the message has one
    assert_sound(message.content)


def test_html_alone_is_a_single_part() -> None:
    parsed = read(build(request(text=None, html="<p>hi</p>")).content)
    assert parsed.get_content_type() == "text/html"
    assert text_of(parsed) == "<p>hi</p>\n"


def test_attachments_make_a_mixed_message_with_exact_bytes_and_names() -> None:
    attachments = [
        {"filename": "invoice 2026-12.pdf", "content_type": "application/pdf", "content": b64(PDF)},
        {"filename": "Rechnung für Jörg.txt", "content_type": "TEXT/Plain", "content": b64(b"caf\xc3\xa9\n")},
        {"filename": 'quote "and" semi;colon?.bin', "content": b64(b"")},
    ]
    message = build(request(html="<p>see attached</p>", attachments=attachments))
    parsed = read(message.content)
    assert parsed.get_content_type() == "multipart/mixed"
    body, *files = parsed.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [(f.get_filename(), f.get_content_type(), f.get_content_disposition()) for f in files] == [
        ("invoice 2026-12.pdf", "application/pdf", "attachment"),
        ("Rechnung für Jörg.txt", "text/plain", "attachment"),
        ('quote "and" semi;colon?.bin', "application/octet-stream", "attachment"),
    ]
    assert [f.get_payload(decode=True) for f in files] == [PDF, b"caf\xc3\xa9\n", b""]
    assert all(f["Content-Transfer-Encoding"] == "base64" for f in files)
    assert_sound(message.content)


def test_an_inline_image_makes_the_html_related_and_keeps_its_content_id() -> None:
    attachments = [
        {"filename": "logo.png", "content_type": "image/png", "content": b64(PNG), "content_id": "logo@example.com"},
        {"filename": "terms.pdf", "content_type": "application/pdf", "content": b64(PDF)},
    ]
    message = build(request(html='<img src="cid:logo@example.com">', attachments=attachments))
    parsed = read(message.content)
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, terms = parsed.iter_parts()
    plain, related = alternative.iter_parts()
    assert (alternative.get_content_type(), plain.get_content_type()) == ("multipart/alternative", "text/plain")
    assert related.get_content_type() == "multipart/related"
    html, logo = related.iter_parts()
    assert text_of(html) == '<img src="cid:logo@example.com">\n'
    assert logo["Content-ID"] == "<logo@example.com>"
    assert logo.get_content_disposition() == "inline"
    assert (logo.get_filename(), logo.get_payload(decode=True)) == ("logo.png", PNG)
    assert terms.get_payload(decode=True) == PDF
    assert_sound(message.content)


def test_html_only_with_an_inline_image_is_related_at_the_top() -> None:
    attachments = [{"filename": "a.png", "content_type": "image/png", "content": b64(PNG), "content_id": "a"}]
    parsed = read(build(request(text=None, html='<img src="cid:a">', attachments=attachments)).content)
    assert parsed.get_content_type() == "multipart/related"
    html, image = parsed.iter_parts()
    assert (html.get_content_type(), image["Content-ID"]) == ("text/html", "<a>")


def test_the_request_message_id_wins_over_the_generated_one() -> None:
    message = build(request(message_id="<invoice-42@example.com>"))
    assert message.message_id == "<invoice-42@example.com>"
    assert read(message.content)["Message-ID"] == "<invoice-42@example.com>"
    assert message.content.count(b"Message-ID:") == 1


def test_compose_needs_an_aware_time_and_a_message_id_in_brackets() -> None:
    valid = parse(request())
    with pytest.raises(ValueError, match="timezone-aware"):
        compose(valid, now=datetime(2026, 12, 5, 9, 30), message_id=MSGID)
    with pytest.raises(ValueError, match="message id"):
        compose(valid, now=NOW, message_id="Q1@mta.example")
    later = compose(valid, now=NOW.astimezone(timezone(timedelta(hours=-5))), message_id=MSGID)
    assert b"Date: Sat, 05 Dec 2026 04:30:00 -0500\r\n" in later.content


def test_long_lines_and_non_ascii_bodies_are_encoded_within_the_line_limit() -> None:
    text = "x" * 5000 + "\n" + "é" * 3000 + "\r\nlast line without newline"
    html = "<p>" + "<b>long</b>" * 1000 + "</p>"
    message = build(request(text=text, html=html))
    assert message.content.isascii()  # 7bit-clean: no next hop needs 8BITMIME
    assert max(len(line) for line in message.content.split(b"\r\n")) <= 78
    plain, rich = read(message.content).iter_parts()
    assert text_of(plain) == text.replace("\r\n", "\n") + "\n"
    assert text_of(rich) == html + "\n"
    assert_sound(message.content)


def test_bare_cr_and_lf_in_the_body_become_crlf_line_ends() -> None:
    message = build(request(text="one\rtwo\nthree\r\nfour"))
    assert content_problem(message.content) is None
    assert text_of(read(message.content)) == "one\ntwo\nthree\nfour\n"


def test_non_ascii_names_and_subjects_are_encoded_words_in_an_ascii_message() -> None:
    body = request(**{"from": {"address": "app@example.com", "name": "Zoë Ørsted 🙂"}}, subject="Grüße " + "ü" * 300)
    message = build(body)
    assert message.smtputf8 is False
    assert message.content.isascii()
    assert b"=?utf-8?" in message.content
    parsed = read(message.content)
    assert parsed["From"].addresses[0].display_name == "Zoë Ørsted 🙂"
    assert parsed["Subject"] == "Grüße " + "ü" * 300
    assert_sound(message.content)


def test_a_non_ascii_address_makes_an_smtputf8_message_with_raw_utf8_headers() -> None:
    message = build(request(to=[{"address": "jörg@bücher.example", "name": "Jörg"}], subject="Grüße"))
    assert message.smtputf8 is True
    assert "To: Jörg <jörg@bücher.example>\r\n".encode() in message.content
    assert "Subject: Grüße\r\n".encode() in message.content
    assert read(message.content)["To"].addresses[0].addr_spec == "jörg@bücher.example"
    assert build(request(envelope_from="bounce@bücher.example")).smtputf8 is True
    assert_sound(message.content)


def test_every_address_of_a_list_reads_back_where_folding_a_list_would_swallow_a_comma() -> None:
    """CPython 3.12 folds `=?..?= <a@b>, c@d` with the comma inside an encoded word: the next address is lost."""
    tricky = "0000000000000\xa0\xa0\xa0\xa0\xa0\xa0\u0800\u0800"
    to = [{"address": "bob@example.org", "name": tricky}, {"address": "carol@example.org"}]
    message = build(request(to=to, cc=[{"address": f"c{index}@example.org", "name": tricky} for index in range(30)]))
    parsed = read(message.content)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["bob@example.org", "carol@example.org"]
    assert len(parsed["Cc"].addresses) == 30 and not parsed["To"].defects and not parsed["Cc"].defects
    assert_sound(message.content)


def test_a_long_non_ascii_display_name_is_split_into_encoded_words_that_read_back() -> None:
    name = "Ĳsselmeer-Ärztekammer für Öffentlichkeitsarbeit und Übersetzungen " * 3
    message = build(request(to=[{"address": "bob@example.org", "name": name}]))
    assert message.content.isascii()
    display = read(message.content)["To"].addresses[0].display_name
    assert "".join(display.split()) == "".join(name.split())
    assert_sound(message.content)


def test_quoted_local_parts_and_address_literals_are_written_as_smtp_accepts_them() -> None:
    message = build(request(to=[{"address": '"john smith"@example.org'}, {"address": "ops@[192.0.2.1]"}]))
    assert message.recipients == ['"john smith"@example.org', "ops@[192.0.2.1]"]
    addresses = [a.addr_spec for a in read(message.content)["To"].addresses]
    assert addresses == ['"john smith"@example.org', "ops@[192.0.2.1]"]


def test_extra_headers_are_written_exactly_and_unfolded() -> None:
    url = "<https://example.com/unsubscribe?" + "token=abcdef&" * 40 + "x=1>"
    message = build(request(headers={"List-Unsubscribe": url, "X-Campaign": "=?not-an-ew", "X-Empty": ""}))
    assert f"\r\nList-Unsubscribe: {url}\r\n".encode() in message.content  # a long URL stays one line
    parsed = read(message.content)
    assert (parsed["List-Unsubscribe"], parsed["X-Campaign"], parsed["X-Empty"]) == (url, "=?not-an-ew", "")


def test_a_non_ascii_extra_header_is_encoded_in_an_ascii_message() -> None:
    message = build(request(headers={"X-Campaign": "Été 2026"}))
    assert message.content.isascii()
    assert read(message.content)["X-Campaign"] == "Été 2026"


def test_tags_are_not_written_into_the_message() -> None:
    message = build(request(tags=["invoice", "tenant:42"]))
    assert b"invoice" not in message.content and b"tenant" not in message.content
    assert parse(request(tags=["invoice", "tenant:42"])).tags == ["invoice", "tenant:42"]


# --- header injection: refused at validation, or neutralised by quoting -------------------------------------------

INJECTIONS = ["x\r\nBcc: evil@example.net", "x\nBcc: evil@example.net", "x\rBcc: evil", "x\0y", "x\x0bBcc: e"]


@pytest.mark.parametrize("attack", INJECTIONS)
def test_line_breaks_and_controls_in_header_text_are_refused_naming_the_field(attack: str) -> None:
    cases = {
        "subject": request(subject=attack),
        "from.name": request(**{"from": {"address": "app@example.com", "name": attack}}),
        "to.0.name": request(to=[{"address": "bob@example.org", "name": attack}]),
        "headers.X-Test": request(headers={"X-Test": attack}),
        "attachments.0.filename": request(attachments=[{"filename": attack + ".pdf", "content": b64(PDF)}]),
        "tags.0": request(tags=[attack]),
    }
    for field, body in cases.items():
        found = errors(body)
        assert [e["loc"] for e in found] == [["body", *(int(p) if p.isdigit() else p for p in field.split("."))]]
        assert found[0]["type"] == "value_error"


def test_unicode_line_separators_are_refused_in_header_text() -> None:
    for separator in ("\u2028", "\u2029", "\x85", "\x1c", "\x0c"):
        assert "U+" in refused(request(subject=f"a{separator}Bcc: evil@example.net"))


def test_header_names_cannot_smuggle_a_field() -> None:
    for name in ("X-A: b\r\nBcc", "X-A:", "X A", "", "X-Ä", "x" * 77):
        assert "not a header field name" in refused(request(headers={name: "v"}))
    assert parse(request(headers={"x" * 76: "v"})).headers == {"x" * 76: "v"}


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("subject", request(subject="=?utf-8?q?x=0D=0ABcc:_evil@example.net?=")),
        ("subject", request(subject="hi =?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5uZXQ=?=")),
        ("from", request(**{"from": {"address": "app@example.com", "name": "=?utf-8?q?E=0D=0ABcc:_x@y.z?="}})),
        ("to.0", request(to=[{"address": "bob@example.org", "name": "=?utf-8?q?a=00b?="}])),
        ("attachments.0.filename", request(attachments=[{"filename": "=?utf-8?q?a=0D=0AX:_y?=", "content": ""}])),
        ("headers.X-Test", request(headers={"X-Test": "=?utf-8?q?a=0D=0ABcc:_evil@example.net?="})),
        ("headers.X-Test", request(headers={"X-Test": "é =?utf-8?q?a=0ABcc:_evil@example.net?="})),
    ],
)
def test_encoded_words_that_decode_to_line_breaks_are_refused_when_composing(field: str, body: dict[str, Any]) -> None:
    """Python < 3.12.5 writes such decoded line breaks raw (CVE-2024-6923): every header is checked as folded."""
    refusal = compose_refusal(body)
    assert refusal.loc == ("body", *(int(p) if p.isdigit() else p for p in field.split(".")))
    assert "encoded word" in refusal.detail
    assert refusal.errors() == [{"loc": list(refusal.loc), "msg": refusal.detail, "type": "value_error"}]


def test_address_syntax_in_display_names_is_neutralised_by_quoting() -> None:
    name = 'Bob" <evil@example.net>, "Eve'
    message = build(request(**{"from": {"address": "app@example.com", "name": name}}))
    addresses = read(message.content)["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in addresses] == [(name, "app@example.com")]
    assert message.recipients == ["bob@example.org"]


def test_header_like_lines_in_bodies_stay_body_text() -> None:
    text = "line\r\nBcc: evil@example.net\r\n\r\n.\r\nMAIL FROM:<x@y>\r\n"
    message = build(request(text=text))
    parsed = read(message.content)
    assert "Bcc" not in parsed and text_of(parsed) == text.replace("\r\n", "\n")
    assert message.recipients == ["bob@example.org"]


# --- hostile Unicode ------------------------------------------------------------------------------------------------


def test_bidirectional_controls_are_refused_in_file_names_only() -> None:
    spoof = "invoice\u202efdp.exe"
    assert "bidirectional" in refused(request(attachments=[{"filename": spoof, "content": ""}]))
    message = build(request(to=[{"address": "bob@example.org", "name": "\u202eevil"}]))  # shown, not executed
    assert read(message.content)["To"].addresses[0].display_name == "\u202eevil"


def test_file_names_may_not_be_paths() -> None:
    for filename in ("../../etc/passwd", "a\\b.txt", "/abs", "..", " . ", ""):
        assert "filename" in refused(request(attachments=[{"filename": filename, "content": ""}]))


def test_disguised_and_malformed_addresses_are_refused_as_smtp_refuses_them() -> None:
    for address in ("bob@ｅxample.org", "bob@example.org.", "bob", "@example.org", "a..b@example.org", "a b@x.org"):
        assert "not a valid mail address" in refused(request(to=[{"address": address}])), address
    for address in ("bob@exаmple.org", "δοκιμή@παράδειγμα.δοκιμή", "user+tag@example.org"):  # valid, if unusual
        assert parse(request(to=[{"address": address}])).to[0].address == address


def test_emoji_zero_width_joiners_and_combining_marks_survive_in_names_and_subjects() -> None:
    name, subject = "👩\u200d💻 Ada", "Cafe\u0301 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u0000"[:-2]
    message = build(request(to=[{"address": "ada@example.org", "name": name}], subject=subject))
    parsed = read(message.content)
    assert (parsed["To"].addresses[0].display_name, parsed["Subject"]) == (name, subject)


# --- reserved headers and other refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        *(name.title() for name in RESERVED_HEADERS),
        "MESSAGE-ID",
        "content-type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "ARC-Seal",
        "arc-message-signature",
        "Resent-From",
        "DKIM-Signature",
        "Authentication-Results",
    ],
)
def test_structural_and_trust_headers_are_refused_naming_the_header(name: str) -> None:
    found = errors(request(headers={name: "x"}))
    assert found[0]["loc"] == ["body", "headers", name, "[key]"]
    assert f"header {name!r} may not be set" in found[0]["msg"]


def test_message_id_is_pointed_to_its_own_field() -> None:
    assert "use the `message_id` field" in refused(request(headers={"Message-ID": "<a@b>"}))


def test_a_header_given_twice_in_different_case_is_refused() -> None:
    assert "given twice" in refused(request(headers={"X-Tag": "a", "x-tag": "b"}))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (request(to=None), "no recipients"),
        (request(text=None), "no body"),
        (request(attachments=[{"filename": "a.png", "content": "", "content_id": "a"}]), "no `html`"),
        (
            request(html="<p/>", attachments=[{"filename": n, "content": "", "content_id": "A"} for n in "ab"]),
            "same `content_id`",
        ),
        (request(attachments=[{"filename": "a", "content": "not base64!"}]), "not valid base64"),
        (request(attachments=[{"filename": "a", "content": "QQ="}]), "not valid base64"),
        (request(attachments=[{"filename": "a", "content": "", "content_type": "multipart/mixed"}]), "cannot be"),
        (request(attachments=[{"filename": "a", "content": "", "content_type": "message/rfc822"}]), "cannot be"),
        (request(attachments=[{"filename": "a", "content": "", "content_type": "text/plain; x=y"}]), "MIME type"),
        (request(attachments=[{"filename": "a", "content": "", "content_id": "<a@b>"}]), "content id"),
        (request(message_id="a@b"), "message id"),
        (request(message_id="<a@b>\r\nBcc: x"), "message id"),
        (request(message_id="<a b@c>"), "message id"),
        (request(envelope_from="bounce"), "not a valid mail address"),
        (request(envelope_from=""), "at least 3 characters"),
        (request(text="a\0b"), "NUL"),
        (request(bcc=[{"address": "a@b.example", "extra": 1}]), "Extra inputs"),
        (request(unknown=True), "Extra inputs"),
        ({**request(), "from_": {"address": "a@b.example"}}, "Extra inputs"),
        (request(to=[{"address": "a@" + "b" * 250 + ".example"}]), "at most 254"),
    ],
)
def test_requests_are_refused_with_a_precise_message(body: dict[str, Any], expected: str) -> None:
    assert expected in refused(body)


def test_errors_have_fastapis_shape_and_echo_no_input() -> None:
    found = errors(request(to=[{"address": "not an address"}], subject="a\nb"))
    assert [e["loc"] for e in found] == [["body", "to", 0, "address"], ["body", "subject"]]
    assert all(set(e) == {"loc", "msg", "type"} for e in found)
    assert errors("{not json")[0]["type"] == "json_invalid"


def test_base64_with_mime_line_breaks_is_accepted() -> None:
    wrapped = base64.encodebytes(PDF).decode("ascii")
    assert "\n" in wrapped
    assert parse(request(attachments=[{"filename": "a.pdf", "content": wrapped}])).attachments[0].content == PDF


# --- limits at the boundary ---------------------------------------------------------------------------------------


def test_the_recipient_limit_counts_to_cc_and_bcc() -> None:
    mailboxes = [{"address": f"r{index}@example.org"} for index in range(7)]
    body = request(to=mailboxes[:3], cc=mailboxes[3:5], bcc=mailboxes[5:])
    assert len(build(body, max_recipients=7).recipients) == 7
    assert "7 recipients" in refused(body, max_recipients=6)


def test_the_default_recipient_limit_applies_without_a_context() -> None:
    mailboxes = [{"address": f"r{index}@example.org"} for index in range(1001)]
    with pytest.raises(ValidationError, match="at most 1000"):
        MessageRequest.model_validate(request(to=mailboxes))
    assert len(MessageRequest.model_validate(request(to=mailboxes[:1000])).to) == 1000


def test_subject_length_limit() -> None:
    message = build(request(subject="s" * MAX_SUBJECT))
    assert read(message.content)["Subject"] == "s" * MAX_SUBJECT
    assert "at most 998 characters" in refused(request(subject="s" * (MAX_SUBJECT + 1)))


def test_attachment_count_limit() -> None:
    files = [{"filename": f"f{index}.txt", "content": b64(b"%d" % index)} for index in range(MAX_ATTACHMENTS + 1)]
    message = build(request(attachments=files[:MAX_ATTACHMENTS]))
    assert len(list(read(message.content).iter_attachments())) == MAX_ATTACHMENTS
    assert "at most 100 items" in refused(request(attachments=files))


def test_tag_limits() -> None:
    assert len(parse(request(tags=[f"t{index}" for index in range(MAX_TAGS)])).tags) == MAX_TAGS
    assert "at most 10 items" in refused(request(tags=[f"t{index}" for index in range(MAX_TAGS + 1)]))
    assert parse(request(tags=["a" * 64, "A.b_c:d-9"])).tags == ["a" * 64, "A.b_c:d-9"]
    for tag in ("a" * 65, "", "a/b", "ä", "a b"):
        assert "a tag is" in refused(request(tags=[tag]))


def test_extra_header_count_and_line_limits() -> None:
    headers = {f"X-H{index}": "v" for index in range(MAX_HEADERS + 1)}
    assert len(parse(request(headers=dict(list(headers.items())[:MAX_HEADERS]))).headers) == MAX_HEADERS
    assert "at most 50 items" in refused(request(headers=headers))
    longest = "v" * (998 - len("X-Long: "))
    message = build(request(headers={"X-Long": longest}))
    assert max(len(line) for line in message.content.split(b"\r\n")) == 998
    assert "more than 998 octets" in refused(request(headers={"X-Long": longest + "v"}))
    assert "more than 998 octets" in refused(request(headers={"X-Long": "é" * 496}))  # octets, not characters


def test_display_name_and_file_name_lengths() -> None:
    assert build(request(to=[{"address": "a@example.org", "name": "n" * 256}])).recipients == ["a@example.org"]
    assert "at most 256 characters" in refused(request(to=[{"address": "a@example.org", "name": "n" * 257}]))
    assert parse(request(attachments=[{"filename": "f" * 255, "content": ""}])).attachments[0].filename == "f" * 255
    assert "at most 255 characters" in refused(request(attachments=[{"filename": "f" * 256, "content": ""}]))


def test_the_schema_documents_every_field_with_its_json_name() -> None:
    schema = MessageRequest.model_json_schema(by_alias=True)
    assert "from" in schema["properties"] and "from_" not in schema["properties"]
    assert schema["additionalProperties"] is False
    assert all(prop.get("description") for prop in schema["properties"].values())
    assert schema["examples"][0]["from"]["address"] == "billing@example.com"
    parse_request(json.dumps(schema["examples"][0]), max_recipients=1)  # the example itself is valid


# --- raw messages (message/rfc822) --------------------------------------------------------------------------------

RAW = (
    b"From: App <app@example.com>\n"
    b"To: Bob <bob@example.org>, undisclosed-recipients:;\n"
    b"Cc: carol@example.org\n"
    b"Bcc: secret@example.net,\n"
    b"  other@example.net\n"
    b"Subject: hi\n"
    b"\n"
    b"body line\n"
    b"Bcc: body@example.net\n"
)


def test_raw_bare_lf_becomes_crlf_and_the_envelope_comes_from_the_headers() -> None:
    message = parse_raw(RAW, envelope_from=None, recipients=None)
    assert message.sender == "app@example.com"
    assert message.recipients == ["bob@example.org", "carol@example.org", "secret@example.net", "other@example.net"]
    assert message.content == (
        b"From: App <app@example.com>\r\n"
        b"To: Bob <bob@example.org>, undisclosed-recipients:;\r\n"
        b"Cc: carol@example.org\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"body line\r\n"
        b"Bcc: body@example.net\r\n"  # the body is not headers
    )
    assert (message.smtputf8, message.message_id) == (False, "")


def test_raw_bcc_is_stripped_also_when_the_query_names_the_envelope() -> None:
    message = parse_raw(RAW, envelope_from="bounce@example.com", recipients=["x@example.net", "X@EXAMPLE.net"])
    assert (message.sender, message.recipients) == ("bounce@example.com", ["x@example.net"])
    assert b"secret" not in message.content and b"other@" not in message.content


def test_raw_messages_get_no_date_or_message_id_here_and_keep_their_own() -> None:
    message = parse_raw(b"From: a@example.com\r\nTo: b@example.org\r\n\r\nx\r\n", envelope_from=None, recipients=None)
    assert b"Date:" not in message.content and b"Message-ID" not in message.content
    own = parse_raw(b"From: a@example.com\r\nMessage-Id: <m@x>\r\n\r\nx", envelope_from=None, recipients=["b@x.org"])
    assert own.message_id == "<m@x>" and own.content.endswith(b"\r\n\r\nx\r\n")


def test_raw_without_separator_gets_the_empty_line() -> None:
    headers_only = parse_raw(b"From: a@example.com\nTo: b@example.org", envelope_from=None, recipients=None)
    assert headers_only.content == b"From: a@example.com\r\nTo: b@example.org\r\n\r\n"
    body_follows = parse_raw(
        b"From: a@example.com\nTo: b@example.org\nhello there\n", envelope_from=None, recipients=None
    )
    assert body_follows.content == b"From: a@example.com\r\nTo: b@example.org\r\n\r\nhello there\r\n"


def test_raw_sender_header_is_the_envelope_sender_and_several_authors_need_the_query() -> None:
    authors = b"From: a@example.com, b@example.com\r\nTo: c@example.org\r\n\r\nx\r\n"
    with pytest.raises(InvalidMessage, match="2 mailboxes: give the envelope sender as the `from` query parameter"):
        parse_raw(authors, envelope_from=None, recipients=None)
    with_sender = b"From: a@example.com, b@example.com\r\nSender: b@example.com\r\nTo: c@example.org\r\n\r\nx\r\n"
    assert parse_raw(with_sender, envelope_from=None, recipients=None).sender == "b@example.com"
    assert parse_raw(authors, envelope_from="a@example.com", recipients=None).sender == "a@example.com"


def test_raw_non_ascii_headers_or_addresses_make_an_smtputf8_message() -> None:
    raw = "From: Jörg <jörg@bücher.example>\r\nTo: b@example.org\r\nSubject: Grüße\r\n\r\nx\r\n".encode()
    message = parse_raw(raw, envelope_from=None, recipients=None)
    assert (message.sender, message.smtputf8) == ("jörg@bücher.example", True)
    ascii_raw = b"From: a@example.com\r\n\r\nx\r\n"
    assert parse_raw(ascii_raw, envelope_from=None, recipients=["b@bücher.example"]).smtputf8 is True
    assert parse_raw(ascii_raw, envelope_from=None, recipients=["b@example.org"]).smtputf8 is False


def test_raw_reads_headers_on_crlf_only_so_a_hidden_bcc_is_no_recipient() -> None:
    """VT, FF and U+2028 are line breaks to `str.splitlines`: a To: after one is no field, and no recipient."""
    raw = (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: x\x0bTo: evil@example.net\u2028To: e2@example.net\r\n\r\n"
    )
    message = parse_raw(raw.encode(), envelope_from=None, recipients=None)
    assert message.recipients == ["b@example.org"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"From: a@example.com\r\nTo: b@example.org\r\n\r\nok\r\nbad\0line\r\n", "line 5 holds a NUL"),
        (b"From: a@example.com\nTo: b@example.org\n\nok\rbad\n", "line 4 holds a CR"),
        (b"From: a@example.com\r\nTo: b@example.org\r\n\r\n" + b"x" * 999 + b"\r\n", "line 4 is 999 octets"),
        (b"", "does not start with a header field"),
        (b"\r\nbody\r\n", "does not start with a header field"),
        (b"  folded: no\r\n\r\n", "does not start with a header field"),
        (b"To: b@example.org\r\n\r\nx\r\n", "no From: field"),
        (b"From: a@example.com\r\nFrom: c@example.com\r\nTo: b@example.org\r\n\r\n", "2 From: fields"),
        (b"From: not an address\r\nTo: b@example.org\r\n\r\n", "From: does not parse"),
        (b"From: a@example.com\r\nSubject: x\r\n\r\n", "no recipients"),
        (b"From: a@example.com\r\nTo: undisclosed-recipients:;\r\n\r\n", "no recipients"),
        (b"From: a@example.com\r\nTo: b@example.org, <<bad>>\r\n\r\n", "To: does not parse"),
        (b"From: a@example.com\r\nTo: \xff@example.org\r\n\r\n", "To: is not UTF-8"),
        (b"From: a@example.com\r\nCc: =?utf-8?q?b?=@example.org\r\n\r\n", "Cc: does not parse"),
    ],
)
def test_raw_refusals_are_precise(raw: bytes, expected: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_raw(raw, envelope_from=None, recipients=None)
    assert expected in caught.value.detail
    assert caught.value.loc == ("body",)


def test_raw_line_limit_boundary() -> None:
    head = b"From: a@example.com\r\nTo: b@example.org\r\n\r\n"
    assert parse_raw(head + b"x" * 998 + b"\r\n", envelope_from=None, recipients=None).content.endswith(b"x\r\n")
    with pytest.raises(InvalidMessage, match="line 4 is 999 octets"):
        parse_raw(head + b"x" * 999, envelope_from=None, recipients=None)


def test_raw_query_envelope_errors_point_at_the_query() -> None:
    body = b"From: a@example.com\r\n\r\nx\r\n"
    with pytest.raises(InvalidMessage) as caught:
        parse_raw(body, envelope_from=None, recipients=["b@example.org", "not an address"])
    assert caught.value.errors()[0]["loc"] == ["query", "to", 1]
    with pytest.raises(InvalidMessage) as caught:
        parse_raw(body, envelope_from="bad", recipients=["b@example.org"])
    assert caught.value.loc == ("query", "from")
    with pytest.raises(InvalidMessage) as caught:
        parse_raw(body, envelope_from=None, recipients=[])
    assert caught.value.loc == ("query", "to")


def test_raw_recipient_limit_boundary() -> None:
    body = b"From: a@example.com\r\n\r\nx\r\n"
    recipients = [f"r{index}@example.org" for index in range(4)]
    assert len(parse_raw(body, envelope_from=None, recipients=recipients, max_recipients=4).recipients) == 4
    with pytest.raises(InvalidMessage, match="5 recipients; at most 4"):
        parse_raw(body, envelope_from=None, recipients=[*recipients, "x@example.org"], max_recipients=4)
