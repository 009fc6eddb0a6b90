"""The decisions of `KUBEMTA_TLS_POLICY` (tls_policy.py): which entry gives a destination its TLS level,
and which texts are refused at start-up with which message an operator reads."""

import pytest

from kubemta.v1 import message_pb2
from kubemta_dns_resolver.tls_policy import PolicyMatch, TlsLevel, parse_tls_policy


@pytest.mark.parametrize(
    ("domain", "match"),
    [
        ("mail.example.net", PolicyMatch(TlsLevel.ENCRYPT, ".example.net")),  # a direct subdomain
        ("a.b.example.net", PolicyMatch(TlsLevel.VERIFY, ".b.example.net")),  # the closest parent wins
        ("x.a.b.example.net", PolicyMatch(TlsLevel.VERIFY, ".b.example.net")),
        ("b.example.net", PolicyMatch(TlsLevel.ENCRYPT, ".example.net")),  # `.b.example.net`: subdomains only
        ("example.net", None),  # `.example.net` does not match example.net itself
        ("Mail.Example.NET.", PolicyMatch(TlsLevel.ENCRYPT, ".example.net")),  # case and the final dot
        ("example.com", PolicyMatch(TlsLevel.NONE, "example.com")),
    ],
)
def test_a_destination_gets_its_own_entry_or_its_closest_parent(domain: str, match: PolicyMatch | None) -> None:
    policy = parse_tls_policy(".example.net=encrypt; .b.example.net=verify; example.com=none")
    assert policy.explicit(domain) == match


def test_an_explicit_entry_wins_over_the_default_and_the_default_covers_the_rest() -> None:
    policy = parse_tls_policy("*=may;.example.net=verify")
    assert policy.lookup("mx.example.net") == PolicyMatch(TlsLevel.VERIFY, ".example.net")
    other = policy.lookup("example.org")
    assert other == PolicyMatch(TlsLevel.MAY, "*") and other.is_default


def test_an_empty_item_between_entries_is_skipped() -> None:
    policy = parse_tls_policy("example.com=none;;  ;example.org=verify")
    assert len(policy) == 2
    assert policy.lookup("example.org") == PolicyMatch(TlsLevel.VERIFY, "example.org")


@pytest.mark.parametrize(
    ("level", "proto", "rank"),
    [
        (TlsLevel.NONE, message_pb2.TLS_POLICY_NONE, 0),
        (TlsLevel.MAY, message_pb2.TLS_POLICY_MAY, 1),
        (TlsLevel.ENCRYPT, message_pb2.TLS_POLICY_ENCRYPT, 2),
        (TlsLevel.VERIFY, message_pb2.TLS_POLICY_VERIFY, 3),
    ],
)
def test_each_level_goes_on_the_bus_as_its_own_value_in_order_of_strictness(
    level: TlsLevel, proto: int, rank: int
) -> None:
    assert (level.proto, level.rank) == (proto, rank)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com==verify", "invalid TLS level '=verify' in 'example.com==verify'"),  # split at the first '='
        (".=verify", "invalid TLS policy entry '.=verify': expected domain=level, e.g. example.com=verify"),
        ("..=verify", "invalid TLS policy entry '..=verify'"),
        ("example.com=strict", "invalid TLS level 'strict' in 'example.com=strict': expected one of none, may, "),
        ("example.com=none;*=may;*=verify", "duplicate TLS policy entry for '\\*'"),
    ],
)
def test_bad_entries_are_refused_with_a_message_naming_them(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tls_policy(text)


def test_the_refusal_of_a_level_lists_every_level() -> None:
    with pytest.raises(ValueError) as refused:
        parse_tls_policy("example.com=strict")
    assert str(refused.value).endswith("expected one of none, may, encrypt, verify")
