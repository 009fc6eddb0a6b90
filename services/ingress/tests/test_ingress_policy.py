"""Envelope address syntax, domain normalisation, client addresses and the relay decision."""

import ipaddress

import pytest

from kubemta_ingress.policy import (
    AddressProblem,
    RelayPolicy,
    check_address,
    client_ip,
    domain_of,
    ip_text,
    normalize_domain,
)


@pytest.mark.parametrize(
    ("domain", "normal"),
    [
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        (" example.org ", "example.org"),
        ("Bücher.Example", "xn--bcher-kva.example"),
        ("[192.0.2.1]", "[192.0.2.1]"),
    ],
)
def test_normalize_domain(domain, normal):
    assert normalize_domain(domain) == normal


def test_domain_of_uses_the_last_at_sign():
    assert domain_of('"a@b"@Example.Org.') == "example.org"


@pytest.mark.parametrize(
    "address",
    [
        "user@example.org",
        "first.last+tag@sub.example.org",
        '"quoted local"@example.org',
        "user@localhost",
        "user@[192.0.2.1]",
        "user@[IPv6:2001:db8::1]",
        "user@xn--bcher-kva.example",
        "user@a1-b2.example",
    ],
)
def test_valid_addresses(address):
    assert check_address(address, smtputf8=False) is None


@pytest.mark.parametrize(
    "address",
    [
        "user",
        "@example.org",
        "user@",
        "user@-example.org",
        "user@example-.org",
        "user@exa_mple.org",
        "user@example..org",
        "user@[300.1.1.1]",
        "user@[IPv6:not-v6]",
        "user@[tag:general]",
        "user@" + "a" * 64 + ".example",
        "user@" + ".".join(["a" * 60] * 5),
        "us\ter@example.org",
        "\udcff@example.org",
    ],
)
def test_invalid_addresses(address):
    assert check_address(address, smtputf8=True) is AddressProblem.SYNTAX


def test_non_ascii_addresses_need_smtputf8():
    assert check_address("jörg@bücher.example", smtputf8=False) is AddressProblem.NEEDS_SMTPUTF8
    assert check_address("jörg@bücher.example", smtputf8=True) is None
    assert check_address("user@bü_cher.example", smtputf8=True) is AddressProblem.SYNTAX


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        (("192.0.2.1", 25), "192.0.2.1"),
        (("::ffff:192.0.2.1", 25, 0, 0), "192.0.2.1"),
        (("2001:db8::1", 25, 0, 0), "2001:db8::1"),
        ("/run/socket", None),
        (None, None),
        (("not-an-ip", 1), None),
    ],
)
def test_client_ip(peer, address):
    result = client_ip(peer)
    assert (str(result) if result is not None else None) == address


POLICY = RelayPolicy.create(
    ["Example.ORG.", "bücher.example"], [ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("2001:db8::/32")]
)


@pytest.mark.parametrize(
    ("recipient", "client", "accepted"),
    [
        ("user@example.org", "203.0.113.5", True),
        ("user@EXAMPLE.org", "203.0.113.5", True),
        ("user@example.org.", "203.0.113.5", True),
        ("user@xn--bcher-kva.example", "203.0.113.5", True),
        ("user@bücher.example", "203.0.113.5", True),
        ("user@sub.example.org", "203.0.113.5", False),
        ("user@elsewhere.test", "203.0.113.5", False),
        ("user@elsewhere.test", "10.1.200.3", True),
        ("user@elsewhere.test", "10.2.0.1", False),
        ("user@elsewhere.test", "2001:db8::25", True),
        ("user@elsewhere.test", "2001:db9::25", False),
        ("user@elsewhere.test", None, False),
    ],
)
def test_relay_policy(recipient, client, accepted):
    address = ipaddress.ip_address(client) if client is not None else None
    assert POLICY.accepts(recipient, address) is accepted


def test_empty_policy_accepts_nothing():
    policy = RelayPolicy.create([], [])
    assert not policy.accepts("user@example.org", ipaddress.ip_address("127.0.0.1"))


@pytest.mark.parametrize("text", ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.7"])
def test_ip_text_is_the_address_as_text_remembered(text):
    address = client_ip((text, 25))
    assert address is not None
    assert ip_text(address) == str(address) and ip_text(address) is ip_text(address)


@pytest.mark.parametrize("address", ["a\x00b@example.org", "a\tb@example.org", "ab@exam\x7fple.org"])
def test_unprintable_characters_anywhere_refuse_an_address(address):
    assert check_address(address, smtputf8=True) is AddressProblem.SYNTAX
