"""The 8-bit to 7-bit MIME converter (kubemta_common.mime_7bit) on messages shaped like real mail: converted parts
decode to what they were, untouched parts and headers stay byte for byte, and what cannot be converted is refused
with a reason; hypothesis checks that it never raises, writes only 7-bit lines and is idempotent."""

import base64
import binascii
import email
import email.message
import email.policy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta_common.mime_7bit import QP_LINE_LIMIT, Unconvertible, qp_lines, to_7bit

HEADERS = (
    b"Received: from client.example.com (client.example.com [192.0.2.1])\r\n"
    b"\tby mx.kubemta.test with ESMTPS id 4Fh2kL0xQz\r\n"
    b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: A long subject that an agent folded over two lines because it was longer\r\n"
    b" than seventy-eight characters\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0100\r\n"
    b"Message-ID: <20260302110000.1234@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)
GERMAN = "Grüße aus Köln, schöne Straße.\r\nZweite Zeile mit Umlauten: äöü ÄÖÜ ß.\r\n".encode()
HTML = "<html><body><p>Grüße — “quoted” ünïcödé</p>\r\n<p>€ 5,00</p></body></html>\r\n".encode()


def converted(message: bytes, **options: bool) -> bytes:
    result = to_7bit(message, **options)
    assert isinstance(result, bytes), result
    return result


def leaves(message: bytes) -> list[tuple[str, bytes]]:
    """(content type, decoded payload) of every leaf part, as Python's email package reads them."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    found = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_content_type(), payload))
    return found


def header_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0]


def assert_7bit_lines(message: bytes) -> None:
    assert message.isascii()
    assert b"\r" not in message.replace(b"\r\n", b"") and b"\n" not in message.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in message.split(b"\r\n"))


# --- converting --------------------------------------------------------------------------------


def test_a_7bit_message_is_returned_as_it_is() -> None:
    message = HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain ascii\r\n"
    assert to_7bit(message) is message


def test_text_plain_8bit_becomes_quoted_printable_in_place() -> None:
    message = (
        HEADERS + b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: 8bit\r\nContent-Language: de-DE\r\n\r\n" + GERMAN
    )
    out = converted(message)
    assert_7bit_lines(out)
    # the header is the same lines, the encoding field replaced where it was
    assert header_of(out) == header_of(message).replace(
        b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: quoted-printable"
    )
    assert out.split(b"\r\n\r\n", 1)[1] == (
        b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, sch=C3=B6ne Stra=C3=9Fe.\r\n"
        b"Zweite Zeile mit Umlauten: =C3=A4=C3=B6=C3=BC =C3=84=C3=96=C3=9C =C3=9F.\r\n"
    )
    assert leaves(out) == leaves(message) == [("text/plain", GERMAN)]


def test_a_mime_message_without_a_transfer_encoding_gets_one() -> None:
    message = HEADERS + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + GERMAN
    out = converted(message)
    assert header_of(out) == header_of(message) + b"\r\nContent-Transfer-Encoding: quoted-printable"
    assert leaves(out) == [("text/plain", GERMAN)]


ALTERNATIVE = (
    HEADERS + b'Content-Type: multipart/alternative;\r\n boundary="------------0fQ3cWzB5oYc8lWk1N2pXa"\r\n'
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"This is a multi-part message in MIME format.\r\n"
    b"--------------0fQ3cWzB5oYc8lWk1N2pXa\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"\r\n"
    b"Greetings from Cologne, in plain ASCII.\r\n"
    b"\r\n"
    b"--------------0fQ3cWzB5oYc8lWk1N2pXa\r\n"
    b"Content-Type: text/html; charset=UTF-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n" + HTML + b"\r\n"
    b"--------------0fQ3cWzB5oYc8lWk1N2pXa--\r\n"
)


def test_multipart_alternative_with_an_8bit_html_part() -> None:
    out = converted(ALTERNATIVE)
    assert_7bit_lines(out)
    plain_part = ALTERNATIVE.split(b"--------------0fQ3cWzB5oYc8lWk1N2pXa\r\n")[1]
    assert plain_part in out  # the ASCII part: every byte as it was, its 7bit label too
    assert out.count(b"--------------0fQ3cWzB5oYc8lWk1N2pXa") == 3  # boundaries intact
    # the folded Content-Type (boundary on its continuation line) is not re-folded; the multipart is 7bit now
    assert header_of(out) == header_of(ALTERNATIVE).replace(b"Encoding: 8bit", b"Encoding: 7bit")
    html_header = b"Content-Type: text/html; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert html_header in out
    assert leaves(out) == leaves(ALTERNATIVE)
    assert [kind for kind, _ in leaves(out)] == ["text/plain", "text/html"]


FORWARDED = (
    HEADERS + b"Content-Type: multipart/mixed; boundary=outer\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hier die weitergeleitete Nachricht, s\xc3\xa4mtlich.\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"Content-Disposition: attachment; filename=original.eml\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"From: Original Sender <orig@example.net>\r\n"
    b"Subject: Bestellung\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xfc\xdfe, die Bestellung ist unterwegs.\r\n"
    b"--inner\r\n"
    b"Content-Type: application/pdf; name=rechnung.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n" + base64.encodebytes(b"%PDF-1.4 \x00\xff" * 40).replace(b"\n", b"\r\n") + b"--inner--\r\n"
    b"--outer--\r\n"
)


def test_a_nested_message_rfc822_is_converted_inside_and_relabelled_7bit() -> None:
    out = converted(FORWARDED)
    assert_7bit_lines(out)
    assert (
        b"Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=original.eml\r\n"
        + (b"Content-Transfer-Encoding: 7bit\r\n\r\nFrom: Original Sender <orig@example.net>\r\n")
        in out
    )
    assert b"Gr=FC=DFe, die Bestellung ist unterwegs." in out
    pdf = FORWARDED[FORWARDED.index(b"Content-Type: application/pdf") : FORWARDED.index(b"--inner--")]
    assert pdf in out  # already base64: untouched
    assert leaves(out) == leaves(FORWARDED)
    assert len(leaves(out)) == 3


def test_a_binary_attachment_labelled_8bit_becomes_base64() -> None:
    blob = bytes(range(256)) * 3
    lines = [blob[i : i + 100].replace(b"\r\n", b"..") for i in range(0, len(blob), 100)]
    body = b"\r\n".join(lines)
    message = (
        HEADERS + b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        b"Content-Type: application/octet-stream; name=data.bin\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        + body
        + b"\r\n--zz--\r\n"
    )
    out = converted(message)
    assert_7bit_lines(out)
    assert b"Content-Transfer-Encoding: base64\r\n" in out
    assert leaves(out) == [("application/octet-stream", body)]
    encoded = out.split(b"base64\r\n\r\n", 1)[1].split(b"\r\n--zz--", 1)[0].split(b"\r\n")
    assert all(len(line) <= QP_LINE_LIMIT for line in encoded)


def test_8bit_headers_are_kept_when_allowed_and_the_body_still_converted() -> None:
    message = HEADERS.replace(b"Bob <", b"B\xc3\xb6b <") + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + GERMAN
    assert isinstance(to_7bit(message), Unconvertible)
    out = converted(message, allow_8bit_headers=True)
    assert b"To: B\xc3\xb6b <bob@example.org>\r\n" in out
    assert out.split(b"\r\n\r\n", 1)[1].isascii()
    assert converted(out, allow_8bit_headers=True) == out


def test_message_global_is_encoded_as_rfc_6532_allows() -> None:
    inner = b"From: J\xc3\xbcrgen <j@example.com>\r\nSubject: \xc3\x9cbersicht\r\n\r\nInhalt \xc3\xa4\r\n"
    message = HEADERS + b"Content-Type: message/global\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + inner
    out = converted(message)
    assert header_of(out) == header_of(message).replace(b"Encoding: 8bit", b"Encoding: quoted-printable")
    # the email package parses any message/* as a nested message, so decode it by hand
    assert binascii.a2b_qp(out.split(b"\r\n\r\n", 1)[1]) == inner


def test_multipart_digest_parts_default_to_message_rfc822() -> None:
    message = (
        HEADERS + b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
        b"From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"caf\xc3\xa9\r\n--d--\r\n"
    )
    out = converted(message)
    # the digest part has no header of its own: its default type, message/rfc822, is recursed into
    assert b"--d\r\n\r\nFrom: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" in out
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n--d--" in out


def test_a_part_without_a_header_or_without_the_blank_line() -> None:
    message = HEADERS + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n\r\nno header: \xc3\xa9\r\n--p\r\n"
    message += b"body right after the delimiter \xc3\xa9\r\n--p--\r\n"
    out = converted(message)
    assert_7bit_lines(out)
    assert leaves(out) == leaves(message)
    assert out.count(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n") == 2


def test_a_boundary_in_the_middle_of_a_long_line_never_starts_an_encoded_line() -> None:
    text = b"\xc3\xa9" + b"x" * 73 + b"--p--" + b"y" * 20
    message = HEADERS + b"Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
    message += b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n--p--\r\n"
    out = converted(message)
    assert not any(line.startswith(b"--p") for line in out.split(b"\r\n")[:-2] if line != b"--p")
    assert leaves(out) == [("text/plain", text)]


@pytest.mark.parametrize(
    "line",
    [b"trailing space \xc3\xa9 ", b"trailing tab\xc3\xa9\t", b".", b"=3D is not an escape \xc3\xa9", b"\x00\x7f\xff"],
)
def test_quoted_printable_lines_decode_to_the_original(line: bytes) -> None:
    encoded = qp_lines(line)
    assert all(len(part) <= QP_LINE_LIMIT and part.isascii() for part in encoded)
    assert not re.search(rb"[ \t]$", encoded[-1])  # RFC 2045 section 6.7 rule 3
    message = HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    assert leaves(message + b"\r\n".join(encoded))[0][1] == line


def test_a_deeply_nested_message_is_converted_without_recursion() -> None:
    depth = 3000
    message = HEADERS + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for level in range(depth):
        message += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (level, level + 1)
    message += b"--b%d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ntief \xc3\xa9\r\n" % depth
    message += b"".join(b"--b%d--\r\n" % level for level in reversed(range(depth + 1)))
    out = converted(message)
    assert_7bit_lines(out)
    assert b"tief =C3=A9" in out
    assert out.replace(b"Content-Transfer-Encoding: quoted-printable\r\n", b"").replace(b"=C3=A9", b"\xc3\xa9") == (
        message
    )


# --- refusing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(
            b"From: a@example.com\r\nSubject: no MIME\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
            "without MIME header fields",
            id="non-mime-8bit-body",
        ),
        pytest.param(HEADERS.replace(b"Subject: A", b"Subject: \xc3\x84") + b"\r\nx\r\n", "header field", id="header"),
        pytest.param(
            HEADERS + b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain;"
            b" name=\xc3\xa9.txt\r\n\r\nx\r\n--q--\r\n",
            "header field",
            id="part-header",
        ),
        pytest.param(
            HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\xe9=E9\r\n",
            "already encoded as quoted-printable",
            id="raw-8bit-in-qp",
        ),
        pytest.param(
            HEADERS + b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBO\xff\r\n",
            "already encoded as base64",
            id="raw-8bit-in-base64",
        ),
        pytest.param(
            HEADERS + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\xe9\r\n",
            "unknown Content-Transfer-Encoding x-uuencode",
            id="unknown-encoding",
        ),
        pytest.param(
            HEADERS + b"Content-Type: message/partial; id=abc; number=1\r\n\r\nFrom: a\r\n\r\n\xe9\r\n",
            "message/partial part, which cannot be re-encoded",
            id="message-partial",
        ),
        pytest.param(
            HEADERS + b"Content-Type: multipart/mixed; boundary=q\r\n\r\nPr\xc3\xa4ambel\r\n--q\r\n\r\nx\r\n--q--\r\n",
            "preamble, epilogue or delimiter line",
            id="preamble",
        ),
        pytest.param(
            HEADERS + b"Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", "without a boundary", id="no-boundary"
        ),
        pytest.param(
            HEADERS + b"Content-Type: multipart/mixed; boundary=q\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            b"--q\r\n\r\n\xe9\r\n--q--\r\n",
            "labelled base64",
            id="encoded-multipart",
        ),
        pytest.param(
            HEADERS + b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: message/rfc822\r\n\r\n"
            b"Subject: forwarded without MIME\r\n\r\n\xe9\r\n--q--\r\n",
            "without MIME header fields",
            id="nested-non-mime",
        ),
    ],
)
def test_what_cannot_be_converted_is_refused_with_a_reason(message: bytes, reason: str) -> None:
    result = to_7bit(message)
    assert isinstance(result, Unconvertible)
    assert reason in result.reason
    assert result.reason.isascii()


# --- properties --------------------------------------------------------------------------------

TEXT_LINE = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=200)
RAW_LINE = st.binary(max_size=120).map(lambda data: data.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    content_type = draw(st.sampled_from([b"text/plain; charset=utf-8", b"text/html", b"application/octet-stream"]))
    label = draw(st.sampled_from([None, b"7bit", b"8bit", b"binary", b"8BIT (as sent)"]))
    lines = draw(st.lists(TEXT_LINE.map(str.encode) | RAW_LINE, max_size=8))
    header = b"Content-Type: " + content_type + b"\r\n"
    if label is not None:
        header += b"Content-Transfer-Encoding: " + label + b"\r\n"
    return header + b"\r\n" + b"\r\n".join(lines)


def multipart(children: list[bytes], boundary: bytes) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + child + b"\r\n" for child in children)
    return b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n" + body + b"--" + boundary + b"--"


def message_rfc822(inner: bytes) -> bytes:
    return b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nMIME-Version: 1.0\r\n" + inner


ENTITY = st.recursive(
    leaf(),
    lambda children: (
        st.tuples(st.lists(children, min_size=1, max_size=3), st.integers(0, 10**6)).map(
            lambda drawn: multipart(drawn[0], b"=_b%d" % drawn[1])
        )
        | children.map(message_rfc822)
    ),
    max_leaves=6,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(ENTITY)
def test_structured_messages_convert_to_7bit_and_decode_to_the_same_parts(entity: bytes) -> None:
    message = b"From: a@example.com\r\nMIME-Version: 1.0\r\n" + entity + b"\r\n"
    out = converted(message)
    assert_7bit_lines(out)
    assert leaves(out) == leaves(message)
    assert to_7bit(out) == out


@settings(max_examples=500)
@given(st.lists(RAW_LINE | st.sampled_from([b"", b"--b", b"--b--", b" folded", b"MIME-Version: 1.0"]), max_size=30))
def test_any_input_gives_7bit_lines_or_a_reason_and_never_raises(lines: list[bytes]) -> None:
    message = b"Content-Type: multipart/mixed; boundary=b\r\n" + b"\r\n".join(lines)
    result = to_7bit(message)
    if isinstance(result, Unconvertible):
        assert result.reason.isascii()
        return
    assert_7bit_lines(result)
    assert to_7bit(result) == result


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = to_7bit(data, allow_8bit_headers=True)
    assert isinstance(result, bytes | Unconvertible)
    if isinstance(result, bytes):
        assert to_7bit(result, allow_8bit_headers=True) == result
