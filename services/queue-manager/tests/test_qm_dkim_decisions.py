"""The DKIM signer's decisions, pinned: which header fields h= lists and in which order, which are oversigned,
which domain and key sign, in which order the signatures stand, and what happens when a key cannot sign.

Every signature is checked with dkimpy's verifier against the records `dkim generate` printed (the `dkim_zone`
fixture); where the decision is about a tag, the test reads the parsed DKIM-Signature tag list.
"""

import logging
import re
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest

from kubemta_mail_auth.dkim.keys import Algorithm, KeyStore
from kubemta_queue_manager.dkim_signer import DkimSigner, Outcome, from_domain, include_headers, seven_bit

SIGNER_LOGGER = "kubemta_queue_manager.dkim_signer"

EVERY_FIELD = (
    b"Received: from client.example.com (client.example.com [192.0.2.1])\r\n"
    b"\tby mx.kubemta.test with ESMTP id ABC123\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"Sender: alice@example.com\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Cc: Carol <carol@example.net>\r\n"
    b"Subject: Re: Quarterly report\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <reply-1@example.com>\r\n"
    b"Reply-To: team@example.com\r\n"
    b"In-Reply-To: <original-1@example.org>\r\n"
    b"References: <original-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Content-Transfer-Encoding: 7bit\r\n"
    b"X-Mailer: kubemta-tests\r\n"
    b"List-Unsubscribe: <mailto:leave@example.com>\r\n"
    b"\r\n"
    b"Thanks, Bob.\r\n"
)
"""A message with every field SIGNED_HEADERS names, once each, and three fields it does not name."""

EVERY_FIELD_H = [
    b"from",
    b"from",
    b"to",
    b"to",
    b"cc",
    b"subject",
    b"subject",
    b"date",
    b"date",
    b"message-id",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"mime-version",
    b"content-type",
    b"content-type",
    b"content-transfer-encoding",
    b"content-transfer-encoding",
]

MINIMAL = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHi.\r\n"
"""A message with only From, To and Subject: every oversigned field it lacks is still listed once."""

MINIMAL_H = [
    b"from",
    b"from",
    b"to",
    b"to",
    b"subject",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]


def tag_lists(message: bytes) -> list[dict[bytes, bytes]]:
    """The parsed tag list of each DKIM-Signature, topmost first."""
    parsed = dkim.DKIM(message)
    return [dkim.util.parse_tag_value(value) for name, value in parsed.headers if name.lower() == b"dkim-signature"]


def h_list(tags: dict[bytes, bytes]) -> list[bytes]:
    """The h= tag as the verifier reads it (RFC 6376 §3.5: colon-separated, white space ignored)."""
    return re.split(rb"\s*:\s*", tags[b"h"])


def verdicts(message: bytes, zone) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature separately, topmost first (a DKIMException counts as a failure)."""
    results = []
    for index in range(len(tag_lists(message))):
        try:
            results.append(bool(dkim.DKIM(message).verify(idx=index, dnsfunc=zone.dnsfunc)))
        except dkim.DKIMException:
            results.append(False)
    return results


def signer_for(zone) -> DkimSigner:
    return DkimSigner(KeyStore(zone.keys_dir))


def signed_with_one_key(zone, message: bytes) -> bytes:
    zone.generate("example.com", "s1", "ed25519")
    result = signer_for(zone).sign(message)
    assert result.outcome is Outcome.SIGNED
    return result.content


# --- include_headers: the h= list ------------------------------------------------------------


def test_every_recommended_field_is_listed_in_a_fixed_order_and_the_key_ones_oversigned() -> None:
    names = [name for name, _ in dkim.DKIM(EVERY_FIELD).headers]
    assert include_headers(names) == EVERY_FIELD_H


def test_absent_oversigned_fields_are_listed_once_and_absent_others_not_at_all() -> None:
    assert include_headers([b"From", b"To", b"Subject"]) == MINIMAL_H
    assert include_headers([]) == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    ]


def test_the_order_of_h_follows_the_signers_list_not_the_message() -> None:
    shuffled = [b"Content-Type", b"Subject", b"Reply-To", b"Cc", b"To", b"From"]
    assert include_headers(shuffled) == [
        b"from",
        b"from",
        b"to",
        b"to",
        b"cc",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"content-type",
        b"content-transfer-encoding",
    ]


def test_a_field_that_occurs_twice_is_listed_twice_and_oversigned_once_more() -> None:
    names = [b"From", b"To", b"to", b"Cc", b"CC", b"References", b"References", b"Received", b"Received"]
    assert include_headers(names) == [
        b"from",
        b"from",
        b"to",
        b"to",
        b"to",
        b"cc",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"references",
        b"references",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    ]


def test_field_names_are_matched_case_insensitively() -> None:
    names = [b"FROM", b"tO", b"SUBJECT", b"Message-Id", b"MIME-VERSION", b"CONTENT-type", b"Reply-to"]
    assert include_headers(names) == [
        b"from",
        b"from",
        b"to",
        b"to",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"mime-version",
        b"content-type",
        b"content-type",
        b"content-transfer-encoding",
    ]


def test_a_field_name_with_8bit_octets_is_ignored_not_an_error() -> None:
    assert include_headers([b"X-F\xc3\xbc\xff", b"From", b"Subject"]) == [
        b"from",
        b"from",
        b"to",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    ]


# --- h= in the signature itself, and what the verifier then accepts -------------------------


def test_the_signature_lists_exactly_the_chosen_fields(dkim_zone) -> None:
    signed = signed_with_one_key(dkim_zone, EVERY_FIELD)
    (tags,) = tag_lists(signed)
    assert h_list(tags) == EVERY_FIELD_H
    assert verdicts(signed, dkim_zone) == [True]


def test_unlisted_fields_may_change_and_the_signature_still_verifies(dkim_zone) -> None:
    signed = signed_with_one_key(dkim_zone, EVERY_FIELD)
    changed = signed.replace(b"X-Mailer: kubemta-tests", b"X-Mailer: a list server").replace(
        b"Sender: alice@example.com", b"Sender: list-owner@example.net"
    )
    assert verdicts(changed, dkim_zone) == [True]


@pytest.mark.parametrize(
    "field",
    [
        b"Cc: Mallory <mallory@example.net>\r\n",
        b"Reply-To: mallory@example.net\r\n",
        b"In-Reply-To: <other@example.net>\r\n",
        b"References: <other@example.net>\r\n",
    ],
    ids=["cc", "reply-to", "in-reply-to", "references"],
)
def test_a_signed_field_that_is_not_oversigned_may_be_added_above(dkim_zone, field: bytes) -> None:
    signed = signed_with_one_key(dkim_zone, EVERY_FIELD)
    assert verdicts(field + signed, dkim_zone) == [True]


@pytest.mark.parametrize(
    "field",
    [
        b"From: mallory@example.com\r\n",
        b"To: mallory@example.net\r\n",
        b"Subject: Urgent\r\n",
        b"Date: Tue, 03 Mar 2026 12:00:00 +0000\r\n",
        b"Message-ID: <other@example.net>\r\n",
        b"MIME-Version: 1.0\r\n",
        b"Content-Type: text/html\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
    ],
    ids=["from", "to", "subject", "date", "message-id", "mime-version", "content-type", "cte"],
)
def test_adding_an_oversigned_field_breaks_the_signature(dkim_zone, field: bytes) -> None:
    signed = signed_with_one_key(dkim_zone, EVERY_FIELD)
    assert verdicts(field + signed, dkim_zone) == [False]


@pytest.mark.parametrize(
    "field, verifies",
    [
        (b"Date: Tue, 03 Mar 2026 12:00:00 +0000\r\n", False),
        (b"Message-ID: <added@example.net>\r\n", False),
        (b"MIME-Version: 1.0\r\n", False),
        (b"Content-Type: text/html\r\n", False),
        (b"Content-Transfer-Encoding: base64\r\n", False),
        (b"Cc: mallory@example.net\r\n", True),
        (b"Reply-To: mallory@example.net\r\n", True),
        (b"References: <other@example.net>\r\n", True),
    ],
    ids=["date", "message-id", "mime-version", "content-type", "cte", "cc", "reply-to", "references"],
)
def test_an_absent_field_may_be_added_only_when_it_is_not_oversigned(dkim_zone, field: bytes, verifies: bool) -> None:
    signed = signed_with_one_key(dkim_zone, MINIMAL)
    (tags,) = tag_lists(signed)
    assert h_list(tags) == MINIMAL_H
    assert verdicts(field + signed, dkim_zone) == [verifies]


def test_opendkim_also_rejects_an_added_absent_oversigned_field(dkim_zone, tmp_path: Path) -> None:
    message = MINIMAL.replace(b"Subject: hello\r\n", b"Subject: hello\r\nDate: Mon, 02 Mar 2026 12:00:00 +0000\r\n")
    signed = signed_with_one_key(dkim_zone, message)  # OpenDKIM refuses a message without Date: as a syntax error
    assert dkim_zone.opendkim_testmsg(signed, tmp_path / "signed") == (0, "")
    assert dkim_zone.opendkim_testmsg(b"Reply-To: mallory@example.net\r\n" + signed, tmp_path / "reply-to") == (0, "")
    status, stderr = dkim_zone.opendkim_testmsg(b"Message-ID: <added@example.net>\r\n" + signed, tmp_path / "mid")
    assert status != 0 and "Bad signature" in stderr


def test_a_duplicated_field_is_signed_in_every_instance_and_a_third_breaks_it(dkim_zone) -> None:
    message = MINIMAL.replace(b"To: bob@example.org\r\n", b"To: bob@example.org\r\nTo: carol@example.net\r\n")
    signed = signed_with_one_key(dkim_zone, message)
    (tags,) = tag_lists(signed)
    assert h_list(tags).count(b"to") == 3
    assert verdicts(signed, dkim_zone) == [True]
    assert verdicts(signed.replace(b"To: carol@example.net", b"To: mallory@example.net"), dkim_zone) == [False]
    assert verdicts(b"To: mallory@example.net\r\n" + signed, dkim_zone) == [False]


def test_upper_case_field_names_are_signed_as_lower_case_names(dkim_zone) -> None:
    message = b"FROM: alice@example.com\r\nSUBJECT: shouting\r\nCC: bob@example.org\r\n\r\nHi.\r\n"
    signed = signed_with_one_key(dkim_zone, message)
    (tags,) = tag_lists(signed)
    assert h_list(tags) == [
        b"from",
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
    ]
    assert verdicts(signed, dkim_zone) == [True]


def test_the_signature_carries_the_keys_tags_and_no_length(dkim_zone) -> None:
    dkim_zone.generate("example.com", "rsa2026", "rsa")
    signed = signer_for(dkim_zone).sign(MINIMAL).content
    (tags,) = tag_lists(signed)
    assert tags[b"a"] == b"rsa-sha256"
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == b"example.com"
    assert tags[b"s"] == b"rsa2026"
    assert b"l" not in tags
    assert verdicts(signed, dkim_zone) == [True]


def test_the_signature_is_folded_with_crlf_only(dkim_zone) -> None:
    dkim_zone.generate("example.com", "s1", "rsa")
    signed = signer_for(dkim_zone).sign(MINIMAL).content
    head = signed[: signed.index(b"From: ")]
    assert head.startswith(b"DKIM-Signature: ") and head.endswith(b"\r\n")
    assert head.count(b"\n") == head.count(b"\r\n") > 1  # folded, every line break a CRLF


# --- which domain signs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, domain",
    [
        (b"Alice <alice@example.com>", "example.com"),
        (b"alice@example.com", "example.com"),
        (b"Alice <Alice@EXAMPLE.COM.>", "example.com"),
        (b"Alice <alice@Mail.Example.COM>", "mail.example.com"),
        (b"<Postmaster@LISTS.EXAMPLE.XXX.>", "lists.example.xxx"),
        (b'"a@b" <"a@b"@example.com>', "example.com"),
        (b"J\xc3\xbcrgen <j@b\xc3\xbccher.example>", "xn--bcher-kva.example"),
        (b"Al\xff\xfece <alice@example.com>", "example.com"),
    ],
    ids=[
        "name-addr",
        "addr-spec",
        "upper-case-and-root-dot",
        "subdomain",
        "tld-of-xs-and-root-dot",
        "quoted-at",
        "u-label",
        "bad-utf8-name",
    ],
)
def test_the_from_domain_is_the_lower_case_a_label_of_the_single_mailbox(value: bytes, domain: str) -> None:
    assert from_domain([(b"Received", b"from x by y"), (b"From", value), (b"To", b"bob@example.org")]) == domain


def test_the_from_field_is_found_whatever_the_case_of_its_name() -> None:
    assert from_domain([(b"FROM", b"alice@example.com")]) == "example.com"
    assert from_domain([(b"from", b"alice@example.com")]) == "example.com"


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"Sender", b"alice@example.com")],
        [(b"From", b"alice@example.com"), (b"From", b"alice@example.com")],
        [(b"From", b"alice@example.com"), (b"From", b"bob@example.org"), (b"From", b"carol@example.net")],
        [(b"From", b"alice@example.com, bob@example.org")],
        [(b"From", b"alice")],
        [(b"From", b"@example.com")],
        [(b"From", b"alice@")],
        [(b"From", b"Alice <alice@.>")],
        [(b"From", b"alice@example..com")],
        [(b"From", b"alice@" + b"a" * 64 + b".example")],
    ],
    ids=[
        "no-fields",
        "sender-only",
        "two-from-fields",
        "three-from-fields",
        "two-mailboxes",
        "no-at",
        "no-local-part",
        "no-domain",
        "root-only",
        "empty-label",
        "label-too-long",
    ],
)
def test_no_single_usable_from_mailbox_means_no_domain(headers: list[tuple[bytes, bytes]]) -> None:
    assert from_domain(headers) is None


def test_a_from_domain_idna_cannot_encode_passes_unsigned(dkim_zone) -> None:
    dkim_zone.generate("example.com", "s1", "ed25519")
    message = MINIMAL.replace(b"alice@example.com", b"alice@example..com")
    result = signer_for(dkim_zone).sign(message)
    assert (result.outcome, result.domain, result.content) == (Outcome.NO_FROM, None, message)
    assert result.signed == [] and result.failed == [] and not result.converted


def test_without_keys_the_result_names_the_from_domain_and_keeps_the_content(dkim_zone) -> None:
    dkim_zone.generate("example.org", "s1", "ed25519")
    message = MINIMAL.replace(b"alice@example.com", b"Alice@Mail.EXAMPLE.com")
    result = signer_for(dkim_zone).sign(message)
    assert (result.outcome, result.domain, result.content) == (Outcome.NO_KEY, "mail.example.com", message)
    assert result.signed == [] and result.failed == []


def test_the_result_names_the_domain_whose_keys_signed(dkim_zone) -> None:
    dkim_zone.generate("example.com", "s1", "ed25519")
    message = MINIMAL.replace(b"alice@example.com", b"alice@news.example.com")
    result = signer_for(dkim_zone).sign(message)
    assert result.outcome is Outcome.SIGNED
    assert result.domain == "example.com"
    assert [(key.domain, key.selector) for key in result.signed] == [("example.com", "s1")]
    assert result.failed == []
    (tags,) = tag_lists(result.content)
    assert tags[b"d"] == b"example.com"
    assert verdicts(result.content, dkim_zone) == [True]


# --- which keys sign, in which order ----------------------------------------------------------


def test_rsa_signs_on_top_then_the_others_by_selector(dkim_zone) -> None:
    dkim_zone.generate("example.com", "a", "ed25519")
    dkim_zone.generate("example.com", "a-b", "ed25519")  # a-b.key sorts before a.key as a file name
    dkim_zone.generate("example.com", "z", "rsa")
    result = signer_for(dkim_zone).sign(MINIMAL)
    assert [(key.selector, key.algorithm) for key in result.signed] == [
        ("z", Algorithm.RSA_SHA256),
        ("a", Algorithm.ED25519_SHA256),
        ("a-b", Algorithm.ED25519_SHA256),
    ]
    tags = tag_lists(result.content)
    assert [(t[b"s"], t[b"a"]) for t in tags] == [
        (b"z", b"rsa-sha256"),
        (b"a", b"ed25519-sha256"),
        (b"a-b", b"ed25519-sha256"),
    ]
    assert all(h_list(t) == MINIMAL_H for t in tags)
    assert result.content.endswith(MINIMAL)
    assert verdicts(result.content, dkim_zone) == [True, True, True]


def test_two_rsa_keys_sign_in_selector_order(dkim_zone) -> None:
    dkim_zone.generate("example.com", "r2", "rsa")
    dkim_zone.generate("example.com", "r1", "rsa")
    result = signer_for(dkim_zone).sign(MINIMAL)
    assert [t[b"s"] for t in tag_lists(result.content)] == [b"r1", b"r2"]
    assert verdicts(result.content, dkim_zone) == [True, True]


# --- a key that cannot sign -------------------------------------------------------------------


def non_ascii_selector(zone) -> None:
    """A usable key file whose name (the selector) is not ASCII: DKIM cannot put it in s=, so it cannot sign."""
    zone.generate("example.com", "s1", "ed25519")
    domain_dir = zone.keys_dir / "example.com"
    (domain_dir / "s\u00e9l.key").write_bytes((domain_dir / "s1.key").read_bytes())
    (domain_dir / "s1.key").unlink()
    (domain_dir / "s1.pub").unlink()


def test_when_every_key_fails_the_message_goes_unsigned_and_the_failure_is_logged(
    dkim_zone, caplog: pytest.LogCaptureFixture
) -> None:
    non_ascii_selector(dkim_zone)
    signer = signer_for(dkim_zone)
    with caplog.at_level(logging.ERROR, logger=SIGNER_LOGGER):
        result = signer.sign(MINIMAL)
    assert result.outcome is Outcome.ERROR
    assert result.content == MINIMAL
    assert result.domain == "example.com"
    assert result.signed == []
    assert [key.selector for key in result.failed] == ["s\u00e9l"]
    errors = [r for r in caplog.records if r.name == SIGNER_LOGGER and r.levelno == logging.ERROR]
    assert [r.getMessage().split(": ", 1)[0] for r in errors] == [
        "DKIM signing with s\u00e9l._domainkey.example.com failed"
    ]
    assert "'ascii' codec can't encode" in errors[0].getMessage()


def test_a_failing_key_leaves_the_others_signing(dkim_zone, caplog: pytest.LogCaptureFixture) -> None:
    non_ascii_selector(dkim_zone)
    dkim_zone.generate("example.com", "good", "rsa")
    with caplog.at_level(logging.ERROR, logger=SIGNER_LOGGER):
        result = signer_for(dkim_zone).sign(MINIMAL)
    assert result.outcome is Outcome.SIGNED
    assert [key.selector for key in result.signed] == ["good"]
    assert [key.selector for key in result.failed] == ["s\u00e9l"]
    (tags,) = tag_lists(result.content)
    assert tags[b"s"] == b"good"
    assert result.content.endswith(MINIMAL)
    assert verdicts(result.content, dkim_zone) == [True]
    assert "DKIM signing with s\u00e9l._domainkey.example.com failed" in caplog.text


# --- 8-bit content ----------------------------------------------------------------------------

EIGHT_BIT = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\r\n"
)


def test_ascii_content_is_signed_as_it_is() -> None:
    content, converted = seven_bit(MINIMAL)
    assert content is MINIMAL and converted is False


def test_8bit_mime_content_is_converted_and_says_so() -> None:
    content, converted = seven_bit(EIGHT_BIT)
    assert converted is True
    assert content.isascii()
    assert content.endswith(b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln.\r\n")


def test_8bit_header_fields_do_not_stop_the_body_conversion() -> None:
    message = EIGHT_BIT.replace(b"To: Bob <", b"To: B\xc3\xb6b <")
    content, converted = seven_bit(message)
    assert converted is True
    assert b"To: B\xc3\xb6b <bob@example.org>\r\n" in content
    assert content.endswith(b"\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln.\r\n")


def test_unconvertible_8bit_content_is_signed_as_it_is_and_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    raw = MINIMAL.replace(b"Hi.", b"Gr\xc3\xbc\xc3\x9fe.")  # 8-bit, without any MIME header field
    with caplog.at_level(logging.DEBUG, logger=SIGNER_LOGGER):
        content, converted = seven_bit(raw)
    assert content is raw and converted is False
    (record,) = [r for r in caplog.records if r.name == SIGNER_LOGGER]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        "8-bit content signed as it is: 8-bit octets in a body without MIME header fields: "
        "no type or charset to encode it by (RFC 2045 section 4)"
    )


def test_a_converted_message_is_signed_over_its_new_fields(dkim_zone, tmp_path: Path) -> None:
    dkim_zone.generate("example.com", "s1", "rsa")
    result = signer_for(dkim_zone).sign(EIGHT_BIT)
    assert result.outcome is Outcome.SIGNED and result.converted is True
    (tags,) = tag_lists(result.content)
    assert h_list(tags) == [
        b"from",
        b"from",
        b"to",
        b"to",
        b"subject",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"mime-version",
        b"content-type",
        b"content-type",
        b"content-transfer-encoding",
        b"content-transfer-encoding",
    ]
    assert verdicts(result.content, dkim_zone) == [True]
