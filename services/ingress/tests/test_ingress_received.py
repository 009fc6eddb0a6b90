"""The Received: trace header and the content rules (CRLF only, no NUL)."""

import ipaddress
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from typing import Any

import pytest

from kubemta_ingress.content import ContentProblem, content_problem, has_bare_line_ending
from kubemta_ingress.received import address_literal, protocol_name, received_header, safe_helo

WHEN = datetime(2026, 3, 2, 12, 30, 5, tzinfo=UTC)


def header(**overrides):
    values: dict[str, Any] = {
        "helo": "client.example",
        "client": ipaddress.ip_address("192.0.2.1"),
        "hostname": "mx.example.org",
        "protocol": "ESMTP",
        "queue_id": "0JcKx9mQ3b7hTfWp",
        "recipients": ["user@example.org"],
        "when": WHEN,
    }
    values.update(overrides)
    return received_header(**values)


def test_single_recipient_header():
    assert header() == (
        b"Received: from client.example ([192.0.2.1])\r\n"
        b"\tby mx.example.org (kubemta) with ESMTP id 0JcKx9mQ3b7hTfWp\r\n"
        b"\tfor <user@example.org>; Mon, 02 Mar 2026 12:30:05 +0000\r\n"
    )


def test_several_recipients_are_not_disclosed():
    assert header(recipients=["a@example.org", "b@example.org"]) == (
        b"Received: from client.example ([192.0.2.1])\r\n"
        b"\tby mx.example.org (kubemta) with ESMTP id 0JcKx9mQ3b7hTfWp;\r\n"
        b"\tMon, 02 Mar 2026 12:30:05 +0000\r\n"
    )


def test_header_parses_as_a_trace_field():
    raw = header(when=datetime(2026, 3, 2, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))) + b"Subject: x\r\n\r\n"
    parsed = message_from_bytes(raw, policy=policy.SMTP)
    value = " ".join(str(parsed["Received"]).split())
    assert value.startswith("from client.example ([192.0.2.1]) by mx.example.org (kubemta) with ESMTP id ")
    assert value.endswith("; Mon, 02 Mar 2026 14:30:05 +0200")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))


def test_ipv6_client_and_unknown_client():
    assert header(client=ipaddress.ip_address("2001:db8::1")).startswith(
        b"Received: from client.example ([IPv6:2001:db8::1])\r\n"
    )
    assert header(client=None).startswith(b"Received: from client.example\r\n\tby ")


def test_address_literal():
    assert address_literal(ipaddress.ip_address("192.0.2.1")) == "[192.0.2.1]"
    assert address_literal(ipaddress.ip_address("::1")) == "[IPv6:::1]"


@pytest.mark.parametrize(
    ("helo", "shown"),
    [
        ("client.example", "client.example"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        (None, "unknown"),
        ("", "unknown"),
        ("evil (comment) \\x", "evil??comment???x"),
        ("bücher.example", "b?cher.example"),
    ],
)
def test_safe_helo(helo, shown):
    assert safe_helo(helo) == shown


@pytest.mark.parametrize(
    ("extended", "smtputf8", "tls", "authenticated", "name"),
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, False, True, False, "ESMTPS"),
        (True, False, False, True, "ESMTPA"),
        (True, False, True, True, "ESMTPSA"),
        (True, True, False, False, "UTF8SMTP"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_protocol_name(extended, smtputf8, tls, authenticated, name):
    assert protocol_name(extended=extended, smtputf8=smtputf8, tls=tls, authenticated=authenticated) == name


def test_utf8_recipient_is_kept_as_utf8():
    assert "for <jörg@bücher.example>;".encode() in header(recipients=["jörg@bücher.example"], protocol="UTF8SMTP")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", None),
        (b"Subject: x\r\n\r\nbody\r\n", None),
        (b"Subject: x\r\n\r\n\xc3\xa9 8bit\r\n", None),
        (b"a\nb\r\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\rb\r\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\r\r\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\n\r\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\r\r\n\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\n\r\r\n", ContentProblem.BARE_LINE_ENDING),
        (b"a\0b\r\n", ContentProblem.NUL_CHARACTER),
        (b"a\0b\n", ContentProblem.BARE_LINE_ENDING),
    ],
)
def test_content_problem(content, problem):
    assert content_problem(content) is problem
    assert has_bare_line_ending(content) is (problem is ContentProblem.BARE_LINE_ENDING)


def test_one_instant_in_two_time_zones_keeps_each_zone():
    """The date text is remembered per second: two zones of one instant are equal datetimes, not equal texts."""
    utc = datetime(2026, 3, 2, 12, 30, 5, 250_000, tzinfo=UTC)
    east = utc.astimezone(timezone(timedelta(hours=2)))
    assert header(when=utc).endswith(b"; Mon, 02 Mar 2026 12:30:05 +0000\r\n")
    assert header(when=east).endswith(b"; Mon, 02 Mar 2026 14:30:05 +0200\r\n")
    assert header(when=utc.replace(microsecond=900_000)).endswith(b"; Mon, 02 Mar 2026 12:30:05 +0000\r\n")
