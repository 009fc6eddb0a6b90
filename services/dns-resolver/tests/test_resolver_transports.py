"""KUBEMTA_TRANSPORTS / KUBEMTA_RELAYHOST / name server parsing and the settings' start-up validation."""

import pytest

from kubemta_common.errors import ConfigError
from kubemta_dns_resolver.settings import ResolverSettings, parse_nameserver
from kubemta_dns_resolver.transports import Nexthop, TransportMap, parse_nexthop, parse_relayhost, parse_transports


def test_transport_entries_parse_postfix_nexthop_syntax():
    transports = parse_transports(
        " example.com = smtp:[relay.example.net]:2525 ; .corp.example=smtp:mx.corp.example:587;"
        "lit.example=smtp:[192.0.2.7];v6.example=smtp:[ipv6:2001:db8::1]:25;plain.example=smtp:Mail.Plain.Example."
    )
    assert len(transports) == 5
    exact = transports.lookup("example.com")
    assert exact is not None and exact.scheme == "smtp"
    assert exact.nexthop == Nexthop("relay.example.net", 2525, mx_lookup=False)
    corp = transports.lookup("a.corp.example")
    assert corp is not None and corp.nexthop == Nexthop("mx.corp.example", 587, mx_lookup=True)
    literal = transports.lookup("lit.example")
    assert literal is not None and literal.nexthop == Nexthop("192.0.2.7", None, mx_lookup=False)
    assert literal.nexthop.is_address
    v6 = transports.lookup("v6.example")
    assert v6 is not None and v6.nexthop == Nexthop("2001:db8::1", 25, mx_lookup=False)
    plain = transports.lookup("plain.example")
    assert plain is not None and plain.nexthop == Nexthop("mail.plain.example", None, mx_lookup=True)


def test_transport_lookup_matches_exact_then_parent_domains_only():
    transports = parse_transports(
        "example.com=smtp:[exact.example.net];.example.com=smtp:[sub.example.net];"
        ".deep.example.com=smtp:[deep.example.net]"
    )

    def host(domain: str) -> str | None:
        found = transports.lookup(domain)
        return None if found is None else found.nexthop.host

    assert host("example.com") == "exact.example.net"
    assert host("EXAMPLE.COM.") == "exact.example.net"
    assert host("a.example.com") == "sub.example.net"
    assert host("a.b.example.com") == "sub.example.net"
    assert host("x.deep.example.com") == "deep.example.net"
    assert host("deep.example.com") == "sub.example.net"  # `.deep.example.com` matches only below it
    assert host("notexample.com") is None
    assert host("example.org") is None


def test_parent_entry_does_not_match_the_parent_itself():
    transports = parse_transports(".example.com=smtp:[sub.example.net]")
    assert transports.lookup("example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com", "expected domain=smtp:nexthop"),
        ("example.com=uucp:[gateway]", "supported schemes are smtp, lmtp"),
        ("example.com=relay:[relay]", "supported schemes are smtp"),
        ("example.com=[relay]:25", "unsupported transport scheme '[relay]'"),
        ("example.com=smtp:", "missing next hop"),
        ("example.com=smtp", "expected scheme:nexthop"),
        ("example.com=smtp:[relay]:99999", "invalid port"),
        ("example.com=smtp:[relay]:abc", "invalid port"),
        ("example.com=smtp:2001:db8::1", "in brackets"),
        ("example.com=smtp:bad host", "neither a host name nor an IP address"),
        ("=smtp:[relay]", "empty domain"),
        ("a.example=smtp:[r1];A.example.=smtp:[r2]", "duplicate transport entry"),
    ],
)
def test_invalid_transports_are_rejected_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_transports(text)


def test_empty_transports_and_relayhost_mean_none():
    assert len(parse_transports("")) == 0
    assert len(parse_transports(" ; ;")) == 0
    assert parse_relayhost("") is None
    assert parse_relayhost("  ") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp.example.net]:587", Nexthop("smtp.example.net", 587, mx_lookup=False)),
        ("[smtp.example.net]", Nexthop("smtp.example.net", None, mx_lookup=False)),
        ("relay.example.net", Nexthop("relay.example.net", None, mx_lookup=True)),
        ("relay.example.net:2525", Nexthop("relay.example.net", 2525, mx_lookup=True)),
        ("192.0.2.1:25", Nexthop("192.0.2.1", 25, mx_lookup=False)),
        ("[::1]:2525", Nexthop("::1", 2525, mx_lookup=False)),
    ],
)
def test_relayhost_syntax(text, expected):
    assert parse_relayhost(text) == expected


def test_nexthop_str_round_trips():
    for text in ("[relay.example.net]:25", "relay.example.net", "mx.example.org:587", "[192.0.2.1]"):
        assert str(parse_nexthop(text)) == text


def test_nameserver_syntax():
    assert parse_nameserver("10.96.0.10") == ("10.96.0.10", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    with pytest.raises(ValueError, match="expected an IP address"):
        parse_nameserver("dns.google:53")


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TRANSPORTS",
        "RELAYHOST",
        "DNS_NAMESERVERS",
        "DNS_TIMEOUT",
        "DNS_MAX_TTL",
        "DNS_NEGATIVE_TTL",
        "DNS_CACHE_SIZE",
        "DELIVERY_PORT",
        "METRICS_LISTEN",
    ):
        monkeypatch.delenv(f"KUBEMTA_{name}", raising=False)


def test_settings_defaults(monkeypatch):
    _clear_env(monkeypatch)
    settings = ResolverSettings.load()
    assert str(settings.metrics_listen) == "127.0.0.1:9103"
    assert settings.dns_nameservers == []
    assert isinstance(settings.transports, TransportMap) and len(settings.transports) == 0
    assert settings.relayhost is None
    assert settings.delivery_port == 25
    assert settings.dns_timeout == 10.0
    assert settings.dns_cache_size == 10000
    assert settings.dns_negative_ttl == 60.0
    assert settings.dns_max_ttl == 86400.0


def test_settings_from_environment(monkeypatch):
    _clear_env(monkeypatch)
    monkeypatch.setenv("KUBEMTA_DNS_NAMESERVERS", "127.0.0.1:5353, 10.0.0.2")
    monkeypatch.setenv("KUBEMTA_TRANSPORTS", "example.com=smtp:[relay]:2525")
    monkeypatch.setenv("KUBEMTA_RELAYHOST", "[smarthost.example.net]:587")
    monkeypatch.setenv("KUBEMTA_DNS_TIMEOUT", "3s")
    monkeypatch.setenv("KUBEMTA_DNS_MAX_TTL", "1h")
    monkeypatch.setenv("KUBEMTA_DELIVERY_PORT", "2525")
    settings = ResolverSettings.load()
    assert settings.dns_nameservers == [("127.0.0.1", 5353), ("10.0.0.2", 53)]
    assert settings.transports.lookup("example.com") is not None
    assert settings.relayhost == Nexthop("smarthost.example.net", 587, mx_lookup=False)
    assert settings.dns_timeout == 3.0
    assert settings.dns_max_ttl == 3600.0
    assert settings.delivery_port == 2525


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KUBEMTA_TRANSPORTS", "example.com=uucp:[gateway]", "KUBEMTA_TRANSPORTS: .*supported schemes are smtp"),
        ("KUBEMTA_TRANSPORTS", "example.com", "KUBEMTA_TRANSPORTS: .*expected domain=smtp:nexthop"),
        ("KUBEMTA_RELAYHOST", "[relay]:0", "KUBEMTA_RELAYHOST: .*invalid port"),
        ("KUBEMTA_DNS_NAMESERVERS", "dns.google", "KUBEMTA_DNS_NAMESERVERS: .*expected an IP address"),
        ("KUBEMTA_DNS_TIMEOUT", "soon", "KUBEMTA_DNS_TIMEOUT: .*invalid duration"),
        ("KUBEMTA_DELIVERY_PORT", "0", "KUBEMTA_DELIVERY_PORT"),
    ],
)
def test_invalid_settings_stop_the_service_with_the_variable_named(monkeypatch, variable, value, message):
    _clear_env(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        ResolverSettings.load()
