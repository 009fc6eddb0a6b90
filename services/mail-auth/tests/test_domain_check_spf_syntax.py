"""SPF record syntax (RFC 7208 §4.5, §12): what is an SPF record, valid terms, and errors naming the bad term."""

import ipaddress

import pytest

from kubemta_mail_auth.domain_check.spf_syntax import Qualifier, SpfSyntaxError, is_spf_record, parse_record


@pytest.mark.parametrize(
    ("text", "is_spf"),
    [
        ("v=spf1", True),
        ("v=spf1 -all", True),
        ("V=SPF1 ~all", True),
        ("v=spf10 -all", False),
        ("v=spf1-all", False),
        (" v=spf1 -all", False),
        ("spf2.0/pra -all", False),
        ("google-site-verification=abc", False),
    ],
)
def test_spf_records_are_recognised_by_their_version_section(text, is_spf):
    assert is_spf_record(text) is is_spf


def test_every_mechanism_and_modifier_parses():
    record = parse_record(
        "v=spf1 ip4:192.0.2.1/24 -ip6:2001:db8::/32 a mx:%{d}/24//64 A/24 ?ptr:example.org "
        "include:_spf.example.net exists:%{i}.%{l1r-}.x.example.org redirect=example.com foo.bar=baz ~all  "
    )
    assert [(m.qualifier, m.name) for m in record.mechanisms] == [
        (Qualifier.PASS, "ip4"),
        (Qualifier.FAIL, "ip6"),
        (Qualifier.PASS, "a"),
        (Qualifier.PASS, "mx"),
        (Qualifier.PASS, "a"),
        (Qualifier.NEUTRAL, "ptr"),
        (Qualifier.PASS, "include"),
        (Qualifier.PASS, "exists"),
        (Qualifier.SOFTFAIL, "all"),
    ]
    ip4, ip6, a, mx, a24, ptr, include, exists, _ = record.mechanisms
    assert ip4.network == ipaddress.ip_network("192.0.2.0/24")
    assert ip6.network == ipaddress.ip_network("2001:db8::/32")
    assert (a.domain_spec, a.cidr4, a.cidr6) == (None, 32, 128)
    assert (mx.domain_spec, mx.cidr4, mx.cidr6) == ("%{d}", 24, 64)
    assert (a24.domain_spec, a24.cidr4) == (None, 24)
    assert ptr.domain_spec == "example.org"
    assert include.domain_spec == "_spf.example.net"
    assert exists.domain_spec == "%{i}.%{l1r-}.x.example.org"
    assert record.redirect == "example.com"
    assert record.dns_terms == 7  # a, mx, a, ptr, include, exists + redirect


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("v=spf1 foo", "unknown mechanism 'foo'"),
        ("v=spf1 include:example.com mx10", "unknown mechanism 'mx10'"),
        ("v=spf1 ip4:192.0.2", "invalid IPv4 address in 'ip4:192.0.2'"),
        ("v=spf1 ip4:192.0.2.01", "invalid IPv4 address"),
        ("v=spf1 ip4:2001:db8::1", "invalid IPv4 address"),
        ("v=spf1 ip6:192.0.2.1", "invalid IPv6 address"),
        ("v=spf1 ip6:fe80::1%eth0", "invalid IPv6 address"),
        ("v=spf1 ip4:192.0.2.0/33", r"invalid CIDR length /33 in 'ip4:192.0.2.0/33'"),
        ("v=spf1 ip6:2001:db8::/129", "invalid CIDR length /129"),
        ("v=spf1 a/024", "invalid CIDR length /024"),
        ("v=spf1 mx//129", "invalid CIDR length /129"),
        ("v=spf1 ip4", "'ip4' needs an address"),
        ("v=spf1 include", "'include' needs a domain"),
        ("v=spf1 exists:", "'exists' needs a domain"),
        ("v=spf1 mx:", "'mx' with ':' needs a domain"),
        ("v=spf1 include:localhost", "must end in a top label"),
        ("v=spf1 a:example.123", "must end in a top label"),
        ("v=spf1 a:example..com", "empty label"),
        ("v=spf1 all:example.com", "'all' takes no argument"),
        ("v=spf1 redirect=a.example redirect=b.example", "redirect= appears more than once"),
        ("v=spf1 exp=a.example exp=b.example", "exp= appears more than once"),
        ("v=spf1 exists:%{x}.example.com", "unknown macro letter 'x'"),
        ("v=spf1 a:%{c}.example.com", "only allowed in exp= explanations"),
        ("v=spf1 a:100%.example.com", "must be followed by"),
        ("v=spf1 foo=%{q}", "invalid macro in 'foo=%{q}'"),
        ("v=spf1 +-all", "invalid term"),
        ("v=spf1 -all\t", "'all' takes no argument"),
    ],
)
def test_invalid_terms_are_named(record, message):
    with pytest.raises(SpfSyntaxError, match=message):
        parse_record(record)


def test_a_domain_spec_may_end_in_a_macro_or_a_dot():
    assert parse_record("v=spf1 exists:%{i}.%{d}").mechanisms[0].domain_spec == "%{i}.%{d}"
    assert parse_record("v=spf1 include:example.com.").mechanisms[0].domain_spec == "example.com."
