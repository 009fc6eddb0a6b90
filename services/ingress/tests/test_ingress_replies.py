"""Enhanced status codes on every reply, aiosmtpd's own refusals, and the EHLO keyword list."""

import inspect

import aiosmtpd.smtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_ingress import replies
from kubemta_ingress.rejections import Reason


@pytest.mark.parametrize(
    ("reply", "enhanced"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("252 Cannot VRFY user, but will accept message", "252 2.0.0 Cannot VRFY user, but will accept message"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ('500 Error: command "FOO" not recognized', '500 5.5.2 Error: command "FOO" not recognized'),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("504 Unknown", "504 5.5.4 Unknown"),
        ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
        ("554 Command refused due to lack of security", "554 5.7.0 Command refused due to lack of security"),
        ("555 MAIL FROM parameters not recognized", "555 5.5.4 MAIL FROM parameters not recognized"),
        ("421 Closing", "421 4.3.0 Closing"),
        ("454 TLS not available", "454 4.7.0 TLS not available"),
        ("459 Strange", "459 4.0.0 Strange"),
        ("559 Strange", "559 5.0.0 Strange"),
        ("250-multi line", "250-2.0.0 multi line"),
        ("553 5.1.3 Error: malformed address", "501 5.1.3 Bad address syntax"),
    ],
)
def test_enhance_adds_the_code(reply, enhanced):
    assert replies.enhance(reply) == enhanced
    assert replies.has_enhanced_code(enhanced) or enhanced.startswith(("220", "354", "334"))


@pytest.mark.parametrize(
    "reply",
    [
        "250 2.1.5 Ok",
        "554 5.7.1 <a@b>: Relay access denied",
        "530 5.7.0 Authentication required",
        "538 5.7.11 Encryption required for requested authentication mechanism",
        "421 4.7.0 MAIL sent too many times",
        "220 mx.example ESMTP kubemta",
        "354 End data with <CR><LF>.<CR><LF>",
        "334 VXNlcm5hbWU6",
        "not a reply",
    ],
)
def test_enhance_leaves_alone(reply):
    assert replies.enhance(reply) == reply


def test_every_own_reply_carries_an_enhanced_code():
    own = [value for name, value in vars(replies).items() if name.isupper() and isinstance(value, str)]
    assert own
    for reply in own:
        assert replies.has_enhanced_code(reply.format(queue_id="X", address="a@b", hostname="h", count=51, limit=50)), (
            reply
        )


def test_builtin_refusals_exist_in_aiosmtpd():
    """The texts we count as rejections are aiosmtpd's own (catches a changed aiosmtpd)."""
    source = inspect.getsource(aiosmtpd.smtp)
    for reply in replies.BUILTIN_REJECTIONS:
        code, text = reply.split(" ", 1)
        assert code in source and text in source.replace("'\n                    '", ""), reply


def test_builtin_rejection():
    assert replies.builtin_rejection("552 Error: Too much mail data") is Reason.MESSAGE_TOO_BIG
    assert replies.builtin_rejection("553 5.1.3 Error: malformed address") is Reason.BAD_ADDRESS
    assert replies.builtin_rejection("500 Line too long (see RFC5321 4.5.3.1.6)") is Reason.LINE_TOO_LONG
    assert replies.builtin_rejection("250 OK") is None


def test_reply_code():
    assert replies.reply_code("452 4.5.3 Error: too many recipients") == 452
    assert replies.reply_code("hello") is None


def test_ehlo_response_completes_aiosmtpd_keywords():
    aiosmtpd_lines = ["250-mx.example", "250-SIZE 1000", "250-8BITMIME", "250-SMTPUTF8", "250 HELP"]
    assert replies.ehlo_response(aiosmtpd_lines, 1000) == [
        "250-mx.example",
        "250-PIPELINING",
        "250-SIZE 1000",
        "250-8BITMIME",
        "250-DSN",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250 HELP",
    ]


def test_ehlo_response_adds_size_when_missing():
    assert replies.ehlo_response(["250 mx.example"], 2048) == [
        "250-mx.example",
        "250-PIPELINING",
        "250-SIZE 2048",
        "250-8BITMIME",
        "250-DSN",
        "250-SMTPUTF8",
        "250 ENHANCEDSTATUSCODES",
    ]
    with pytest.raises(ValueError):
        replies.ehlo_response([], 1)


def test_replies_that_carry_a_code_are_not_cached():
    """Our own replies (a queue id in some) pass as they are; only aiosmtpd's few texts are remembered."""
    before = replies._enhanced.cache_info().currsize
    for number in range(300):
        assert replies.enhance(f"250 2.0.0 Ok: queued as Q{number:015d}") == f"250 2.0.0 Ok: queued as Q{number:015d}"
    assert replies._enhanced.cache_info().currsize == before
    assert replies.enhance("221 Bye") == "221 2.0.0 Bye"
    assert replies.enhance("221 Bye") == "221 2.0.0 Bye"
    assert replies._enhanced.cache_info().hits >= 1


@settings(max_examples=500)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(exclude_categories=()),
            st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),  # surrogate-escaped bytes
            st.characters(max_codepoint=0x9F, categories=["Cc"]),
        ),
        max_size=60,
    )
)
def test_a_speakable_reply_encodes_and_keeps_every_printable_character(text: str) -> None:
    """Any text (lone surrogates, controls included) becomes a line UTF-8 can carry, of the same length, with
    every printable character where it was and `?` for the rest."""
    reply = replies.speakable("501 5.5.4 Could not VRFY " + text)
    reply.encode("utf-8")
    assert reply.isprintable()
    assert len(reply) == len("501 5.5.4 Could not VRFY ") + len(text)
    for given_character, sent in zip(text, reply[len("501 5.5.4 Could not VRFY ") :], strict=True):
        assert sent == (given_character if given_character.isprintable() else "?")


def test_a_printable_reply_is_sent_as_it_is() -> None:
    reply = "250 2.0.0 Ok: queued as 4Q1X, é"
    assert replies.speakable(reply) is reply
