"""The field values of a DSN, exactly: the safe-line gate, its length limits, the address forms
(rfc822, xtext, unitext, the To: addr-spec), the Status and the Diagnostic-Code.

These are the texts a bounce parser reads field by field, so each test pins the exact value.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest

from kubemta_queue_manager.dsn import Action, RecipientReport, Report, build_dsn
from kubemta_queue_manager.dsn_fields import (
    Reply,
    diagnostic_value,
    escape,
    field_value,
    final_recipient,
    header_line,
    host_value,
    is_utf8_address,
    mailbox,
    one_line,
    smtp_reply,
    status_code,
    unitext_address,
    xtext_address,
)
from tests.harness.dsn_reader import read_dsn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# --- field_value: one line of safe characters -------------------------------------------------


def test_escape_is_the_rfc6533_form_with_at_least_two_upper_case_hex_digits() -> None:
    assert escape("\n") == "\\x{0A}"
    assert escape("\x7f") == "\\x{7F}"
    assert escape("é") == "\\x{E9}"
    assert escape("\u2028") == "\\x{2028}"
    assert escape("\U0001f600") == "\\x{1F600}"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain text", "plain text"),
        (" ~", " ~"),
        ("a\r\nb", "a\\x{0D}\\x{0A}b"),
        ("\x00\x1f\x7f\t", "\\x{00}\\x{1F}\\x{7F}\\x{09}"),
        ("é", "\\x{E9}"),
        ("\U0001f600", "\\x{1F600}"),
        ("=?utf-8?q?x?=", "=\\x{3F}utf-8?q?x?="),
        ("==?", "==\\x{3F}"),
        ("?= =x? =", "?= =x? ="),
        ("=\r?", "=\\x{0D}?"),
    ],
)
def test_an_ascii_field_keeps_printable_ascii_and_escapes_everything_else(text: str, value: str) -> None:
    assert field_value(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("jörg ∑ 日本", "jörg ∑ 日本"),
        ("\U0001f600", "\U0001f600"),
        ("a\u2028b", "a\\x{2028}b"),
        ("a\x85b", "a\\x{85}b"),
        ("a\u00a0b", "a\\x{A0}b"),
        ("a\u200bb", "a\\x{200B}b"),
        ("a\ud800b", "a\\x{D800}b"),
        ("a\r\nb", "a\\x{0D}\\x{0A}b"),
        ("=?", "=\\x{3F}"),
    ],
)
def test_a_utf8_field_keeps_printable_non_ascii_but_no_control_format_or_space_character(text: str, value: str) -> None:
    assert field_value(text, utf8=True) == value


def test_a_field_is_cut_at_800_characters_by_default_ending_in_an_ellipsis() -> None:
    assert field_value("x" * 800) == "x" * 800
    assert field_value("x" * 801) == "x" * 797 + "..."


def test_a_field_is_cut_at_the_given_limit_keeping_room_for_the_ellipsis() -> None:
    assert field_value("abcde", limit=5) == "abcde"
    assert field_value("abcdef", limit=5) == "ab..."
    assert field_value("abcd", limit=3) == "..."


def test_a_field_is_cut_between_escapes_never_inside_one() -> None:
    assert field_value("\r" * 200) == "\\x{0D}" * 132 + "..."
    assert field_value("ab\r\r", limit=11) == "ab\\x{0D}..."
    assert field_value("ab\r\r", limit=10) == "ab..."


def test_field_value_is_idempotent_on_escaped_and_cut_values() -> None:
    for text in ("a\r\nb=?c", "\r" * 200, "jörg\u2028"):
        once = field_value(text, utf8=True)
        assert field_value(once, utf8=True) == once


def test_a_header_line_is_the_name_a_colon_a_space_and_the_value() -> None:
    assert header_line("Action", field_value("failed")) == "Action: failed"


def test_one_line_makes_every_run_of_white_space_a_single_space() -> None:
    assert one_line("  a \t\r\n b\u2028c\x85d\x0be  ") == "a b c d e"
    assert one_line("") == ""


def test_a_host_name_is_cut_at_300_characters() -> None:
    assert host_value("h" * 300) == "h" * 300
    assert host_value("h" * 301) == "h" * 297 + "..."
    assert host_value("mx\r\n.example.org") == "mx\\x{0D}\\x{0A}.example.org"
    assert host_value("mx.exämple.org") == "mx.ex\\x{E4}mple.org"


# --- addresses in the delivery-status part -----------------------------------------------------


def test_xtext_escapes_space_controls_plus_equals_backslash_and_non_ascii() -> None:
    assert xtext_address("a b@x") == "a\\x{20}b@x"
    assert xtext_address("!~@x") == "!~@x"
    assert xtext_address("a+b=c\\d@x") == "a\\x{2B}b\\x{3D}c\\x{5C}d@x"
    assert xtext_address("\x7f\x1f@x") == "\\x{7F}\\x{1F}@x"
    assert xtext_address("jörg@x") == "j\\x{F6}rg@x"
    assert xtext_address("Xavier@X.example") == "Xavier@X.example"


def test_unitext_keeps_printable_non_ascii_and_escapes_the_rest_as_xtext_does() -> None:
    assert unitext_address("jörg@exämple.org") == "jörg@exämple.org"
    assert unitext_address("a b+c@x") == "a\\x{20}b\\x{2B}c@x"
    assert unitext_address("a\u2028b\u00a0@x") == "a\\x{2028}b\\x{A0}@x"


def test_a_plain_address_is_an_rfc822_final_recipient() -> None:
    assert final_recipient("bob@example.org") == "rfc822; bob@example.org"
    assert final_recipient("!#$%&'*+-/=^_`{|}~@x?=") == "rfc822; !#$%&'*+-/=^_`{|}~@x?="
    assert final_recipient("bob@example.org", utf8=True) == "rfc822; bob@example.org"


def test_the_empty_address_is_the_null_reverse_path() -> None:
    assert final_recipient("") == "rfc822; <>"
    assert final_recipient("", utf8=True) == "rfc822; <>"


@pytest.mark.parametrize(
    ("address", "value"),
    [
        ("a b@x", "utf-8; a\\x{20}b@x"),
        ("a=?b@x", "utf-8; a\\x{3D}?b@x"),
        ("a\x7f@x", "utf-8; a\\x{7F}@x"),
        ("a\r\nb@x", "utf-8; a\\x{0D}\\x{0A}b@x"),
        ("jörg@exämple.org", "utf-8; j\\x{F6}rg@ex\\x{E4}mple.org"),
    ],
)
def test_an_address_a_reader_could_misread_is_a_utf8_xtext_final_recipient(address: str, value: str) -> None:
    assert final_recipient(address) == value


def test_in_a_global_report_a_utf8_address_is_readable_unitext() -> None:
    assert final_recipient("jörg@exämple.org", utf8=True) == "utf-8; jörg@exämple.org"
    assert final_recipient("jörg\u2028@x", utf8=True) == "utf-8; jörg\\x{2028}@x"


def test_an_address_of_900_characters_is_written_whole_and_a_longer_one_cut() -> None:
    address = "a" * 888 + "@example.org"
    assert len(address) == 900
    assert final_recipient(address) == f"rfc822; {address}"
    longer = "b" + address
    assert final_recipient(longer) == f"utf-8; {longer[:897]}..."


def test_a_long_escaped_address_is_cut_between_escapes_at_900() -> None:
    value = final_recipient("é" * 200)
    assert value == "utf-8; " + "\\x{E9}" * 149 + "..."


def test_an_address_is_utf8_only_when_it_holds_a_non_ascii_character() -> None:
    assert not is_utf8_address("")
    assert not is_utf8_address("bob@example.org")
    assert is_utf8_address("jörg@example.org")


# --- Status and Diagnostic-Code ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["2.0.0", "4.4.7", "5.1.1", "5.100.999", "4.0.10"])
def test_an_enhanced_status_code_is_the_status(status: str) -> None:
    assert status_code(status, "5.0.0") == status


@pytest.mark.parametrize("status", ["", "3.0.0", "6.1.1", "5.1", "5.1000.1", "5.1.1000", "5.1.1 ", "x5.1.1", "5-1-1"])
def test_anything_else_is_replaced_by_the_fallback_status(status: str) -> None:
    assert status_code(status, "4.0.0") == "4.0.0"


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply(550, "5.1.1", "User unknown"), "550 5.1.1 User unknown"),
        (Reply(550, "5.1.1", "550 5.1.1 No such user"), "550 5.1.1 No such user"),
        (Reply(550, "5.1.1", "550-5.1.1 first line"), "550-5.1.1 first line"),
        (Reply(550, "5.1.1", "550"), "550"),
        (Reply(550, "5.1.1", "5501 odd"), "550 5.1.1 5501 odd"),
        (Reply(550, "5.1.1", "551 5.1.6 moved"), "550 5.1.1 551 5.1.6 moved"),
        (Reply(550, "5.1.1", "5.7.1 Denied"), "550 5.7.1 Denied"),
        (Reply(550, "5.1.1", "5.7.1"), "550 5.7.1"),
        (Reply(550, "5.1.1", "5.7.1x Denied"), "550 5.1.1 5.7.1x Denied"),
        (Reply(550, "5.1.1", "6.7.1 Denied"), "550 5.1.1 6.7.1 Denied"),
        (Reply(550, "5.1.1", "5.7.1000 Denied"), "550 5.1.1 5.7.1000 Denied"),
        (Reply(550, "5.1.1", ""), "550 5.1.1"),
        (Reply(550, "", ""), "550"),
        (Reply(554, "5.7.1", "  Rejected\r\n\tby   policy "), "554 5.7.1 Rejected by policy"),
        (Reply(421, "4.7.0", "421\r\n"), "421"),
    ],
)
def test_the_smtp_reply_carries_both_codes_once(reply: Reply, text: str) -> None:
    assert smtp_reply(reply) == text


def test_a_diagnostic_with_an_smtp_reply_is_of_type_smtp() -> None:
    assert diagnostic_value(Reply(550, "5.1.1", "User\r\nunknown")) == "smtp; 550 5.1.1 User unknown"


def test_a_diagnostic_without_an_smtp_reply_is_of_type_x_kubemta() -> None:
    assert diagnostic_value(Reply(0, "5.1.2", " no\r\nMX ")) == "X-kubemta; no MX"
    assert diagnostic_value(Reply(0, "5.1.2", "")) == "X-kubemta; no further information"
    assert diagnostic_value(Reply(0, "5.1.2", " \r\n\t")) == "X-kubemta; no further information"


def test_a_diagnostic_is_cut_at_800_characters() -> None:
    exact = "d" * (800 - len("X-kubemta; "))
    assert diagnostic_value(Reply(0, "5.0.0", exact)) == f"X-kubemta; {exact}"
    assert diagnostic_value(Reply(0, "5.0.0", exact + "d")) == f"X-kubemta; {exact[:-3]}..."


def test_a_diagnostic_escapes_an_encoded_word() -> None:
    assert diagnostic_value(Reply(550, "5.1.1", "=?utf-8?q?x?=")) == "smtp; 550 5.1.1 =\\x{3F}utf-8?q?x?="


# --- the To: addr-spec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.com",
        "a.b-c_d+e@mail.example.com",
        "!#$%&'*+-/=^_`{|}~@example.com",
        "a@ex_ample.com",
        "a@x",
        "a@[192.0.2.1]",
        "a@[IPv6:2001:db8::1]",
    ],
)
def test_an_address_that_is_an_addr_spec_is_written_as_it_is(address: str) -> None:
    assert mailbox(address, utf8=False) == address


@pytest.mark.parametrize(
    ("address", "value"),
    [
        ("a b@x", '"a b"@x'),
        ("a..b@x", '"a..b"@x'),
        (".a@x", '".a"@x'),
        ("a.@x", '"a."@x'),
        ("a@b@example.com", '"a@b"@example.com'),
        ('a"b@x', '"a\\"b"@x'),
        ("a\\b@x", '"a\\\\b"@x'),
        ("a=?b@x", '"a\\=\\?b"@x'),
        ("a b=c?d@x", '"a b\\=c\\?d"@x'),
        ('"a b"@x', '"a b"@x'),
        ('"ab"@x', "ab@x"),
        ('"a\\"b"@x', '"a\\"b"@x'),
        ('"a\\b"@x', "ab@x"),
        ('"a"b"@x', '"\\"a\\"b\\""@x'),
        ('"a\\"@x', '"\\"a\\\\\\""@x'),
        ('"@x', '"\\""@x'),
        ('"ab@x', '"\\"ab"@x'),
        ('ab"@x', '"ab\\""@x'),
    ],
)
def test_a_local_part_that_is_no_dot_atom_is_quoted_with_quoted_pairs(address: str, value: str) -> None:
    assert mailbox(address, utf8=False) == value


@pytest.mark.parametrize(
    "address",
    [
        "alice",
        "@example.com",
        "alice@",
        "alice@exa mple.com",
        "alice@example..com",
        "alice@example.com.",
        "alice@.example.com",
        "alice@exam!ple.com",
        "alice@[a\\b]",
        "alice@[]",
        "alice@[a b]",
        '""@x',
        "a\r\nb@x",
        "a\x00@x",
        "a\x7f@x",
        "jörg@example.org",
        "alice@exämple.org",
    ],
)
def test_an_address_that_cannot_be_an_ascii_addr_spec_is_none(address: str) -> None:
    assert mailbox(address, utf8=False) is None


def test_a_utf8_address_is_an_addr_spec_only_where_utf8_is_allowed() -> None:
    assert mailbox("jörg@exämple.org", utf8=True) == "jörg@exämple.org"
    assert mailbox("jö rg@exämple.org", utf8=True) == '"jö rg"@exämple.org'
    assert mailbox("a\u200bb@x", utf8=True) is None
    assert mailbox("a\u00a0b@x", utf8=True) is None
    assert mailbox("a@ex\u200bample.org", utf8=True) is None
    assert mailbox("a@ex\u00e4mple.org", utf8=True) == "a@exämple.org"
    assert mailbox("a@exa mple.org", utf8=True) is None
    assert mailbox("a@exa\u2028mple.org", utf8=True) is None


def test_an_addr_spec_of_up_to_900_characters_is_a_mailbox() -> None:
    address = "a" * 898 + "@x"
    assert mailbox(address, utf8=False) == address
    assert mailbox("a" + address, utf8=False) is None


# --- where the values end up: the 998-octet line limit of the text parts --------------------------


def _original_part(header: bytes) -> str:
    report = Report(
        hostname="mx.kubemta.test",
        queue_id="QORIG",
        sender="alice@example.com",
        arrival=NOW - timedelta(hours=1),
        last_attempt=NOW,
        action=Action.FAILED,
        recipients=[RecipientReport("bob@example.org", "5.1.1", 550, "no")],
        original_content=header + b"\r\n\r\nbody\r\n",
    )
    raw = build_dsn(report, message_id="<QNEW@mx.kubemta.test>", now=NOW)
    read_dsn(raw)
    part = raw.decode().split("Content-Type: text/rfc822-headers; charset=utf-8\r\n", 1)[1]
    return part


def test_an_original_header_line_of_998_characters_is_returned_as_7bit() -> None:
    line = b"X-Long: " + b"v" * 990
    assert len(line) == 998
    part = _original_part(line)
    assert part.startswith("Content-Transfer-Encoding: 7bit\r\n")
    assert f"\r\n\r\n{line.decode()}\r\n" in part


def test_an_original_header_line_longer_than_998_characters_is_quoted_printable() -> None:
    line = b"X-Long: " + b"v" * 991
    part = _original_part(line)
    assert part.startswith("Content-Transfer-Encoding: quoted-printable\r\n")
    assert max(len(row) for row in re.split(r"\r\n", part)) <= 76
