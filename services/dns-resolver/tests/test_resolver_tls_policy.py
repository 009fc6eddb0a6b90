"""KUBEMTA_TLS_POLICY parsing and matching, and the TLS policy the router attaches to routes."""

import random

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.route_tls import RouteTlsPolicy
from kubemta_dns_resolver.router import CachePolicy, Router
from kubemta_dns_resolver.settings import ResolverSettings
from kubemta_dns_resolver.tls_policy import TlsLevel, parse_tls_policy
from kubemta_dns_resolver.transports import parse_relayhost, parse_transports


def test_parse_and_match_exact_parent_and_default():
    policy = parse_tls_policy(" Example.COM = verify ; .example.net=encrypt;*=may; ")
    assert len(policy) == 3
    exact, sub, parent, default = (
        policy.lookup(name) for name in ("example.com", "sub.example.com", "a.b.example.net", "example.net")
    )
    assert exact is not None and exact.level is TlsLevel.VERIFY
    assert sub is not None and sub.level is TlsLevel.MAY  # exact key: not its subdomains
    assert parent is not None and parent.key == ".example.net"
    assert default is not None and default.is_default  # `.parent` matches subdomains only
    assert policy.explicit("other.org") is None
    assert policy.default is TlsLevel.MAY


def test_empty_policy_has_no_entries():
    assert parse_tls_policy("").lookup("example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com", "expected domain=level"),
        ("example.com=secure", "invalid TLS level 'secure'"),
        ("=verify", "expected domain=level"),
        ("a.com=may;A.com.=none", "duplicate TLS policy entry"),
    ],
)
def test_invalid_policies_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_tls_policy(text)


def test_settings_validate_the_policy_at_start(monkeypatch):
    monkeypatch.setenv("KUBEMTA_TLS_POLICY", "example.com=maybe")
    with pytest.raises(ValueError, match="KUBEMTA|tls_policy|invalid TLS level"):
        ResolverSettings()


def make_router(dns, *, tls_policy="", transports="", relayhost=""):
    return Router(
        dns,
        transports=parse_transports(transports),
        relayhost=parse_relayhost(relayhost),
        delivery_port=25,
        cache=TtlLruCache(0),
        policy=CachePolicy(),
        rng=random.Random(1),
        tls=RouteTlsPolicy(parse_tls_policy(tls_policy), None),
    )


async def test_mx_route_gets_the_domain_entry(fake_dns):
    fake_dns.add_mx("dest.test", [(10, "mx.dest.test")])
    fake_dns.add_address("mx.dest.test", "A", ["192.0.2.1"])
    route = await make_router(fake_dns, tls_policy="dest.test=verify;*=may").route("dest.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    assert route.tls_policy_source == "KUBEMTA_TLS_POLICY dest.test"


async def test_default_applies_and_no_policy_is_opportunistic(fake_dns):
    fake_dns.add_mx("dest.test", [(10, "mx.dest.test")])
    fake_dns.add_address("mx.dest.test", "A", ["192.0.2.1"])
    route = await make_router(fake_dns, tls_policy="*=encrypt").route("dest.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_ENCRYPT
    route = await make_router(fake_dns).route("dest.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_UNSPECIFIED and route.tls_policy_source == ""


async def test_relayhost_needs_encrypt_at_least_unless_an_entry_says_otherwise(fake_dns):
    route = await make_router(fake_dns, relayhost="[192.0.2.9]:587").route("anywhere.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_ENCRYPT
    fake_dns.add_address("relay.test", "A", ["192.0.2.9"])
    route = await make_router(fake_dns, relayhost="[relay.test]:587", tls_policy="relay.test=verify").route("x.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    route = await make_router(fake_dns, relayhost="[relay.test]:587", tls_policy="relay.test=may").route("x.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_MAY


async def test_transport_routes_look_up_the_next_hop(fake_dns):
    fake_dns.add_address("hub.internal", "A", ["192.0.2.7"])
    router = make_router(fake_dns, transports="corp.test=smtp:[hub.internal]", tls_policy="hub.internal=none")
    route = await router.route("corp.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_NONE
