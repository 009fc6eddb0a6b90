"""LMTP transports: `lmtp:host:port`, `lmtp:[host]:port`, `lmtp:unix:/path` parsing and their routes (faked DNS)."""

import random

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.handler import _describe_hosts
from kubemta_dns_resolver.router import CachePolicy, RouteFailure, Router
from kubemta_dns_resolver.settings import ResolverSettings
from kubemta_dns_resolver.transports import LMTP_PORT, Nexthop, parse_relayhost, parse_transports


def make_router(dns, transports: str) -> Router:
    return Router(
        dns,
        transports=parse_transports(transports),
        relayhost=parse_relayhost(""),
        delivery_port=2525,
        cache=TtlLruCache(0),
        policy=CachePolicy(),
        rng=random.Random(1),
    )


def test_lmtp_nexthops_parse_in_postfix_lmtp_syntax():
    transports = parse_transports(
        "a.example=lmtp:dovecot.mail.svc:2424;b.example=lmtp:[Dovecot.Mail.Svc]:24;c.example=lmtp:unix:/run/dovecot/lmtp;"
        "d.example=lmtp:[192.0.2.9];e.example=LMTP:inet:dovecot:2400;f.example=lmtp:[ipv6:2001:db8::9]:24"
    )
    plain = transports.lookup("a.example")
    assert plain is not None and plain.scheme == "lmtp"
    # An LMTP host is a host, never a mail domain: no MX lookup even without brackets.
    assert plain.nexthop == Nexthop("dovecot.mail.svc", 2424, mx_lookup=False)
    bracketed = transports.lookup("b.example")
    assert bracketed is not None and bracketed.nexthop == Nexthop("dovecot.mail.svc", 24, mx_lookup=False)
    socket_path = transports.lookup("c.example")
    assert socket_path is not None
    assert socket_path.nexthop == Nexthop("", None, mx_lookup=False, unix_socket="/run/dovecot/lmtp")
    assert str(socket_path.nexthop) == "unix:/run/dovecot/lmtp"
    default_port = transports.lookup("d.example")
    assert default_port is not None and default_port.nexthop == Nexthop("192.0.2.9", LMTP_PORT, mx_lookup=False)
    inet = transports.lookup("e.example")
    assert inet is not None and inet.scheme == "lmtp" and inet.nexthop == Nexthop("dovecot", 2400, mx_lookup=False)
    v6 = transports.lookup("f.example")
    assert v6 is not None and v6.nexthop == Nexthop("2001:db8::9", 24, mx_lookup=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.example=lmtp:unix:run/lmtp", "socket path must be absolute"),
        ("a.example=lmtp:unix:", "socket path must be absolute"),
        ("a.example=lmtp:[dovecot]:0", "invalid port"),
        ("a.example=lmtp:", "missing next hop"),
        ("a.example=lmtp:bad host:24", "neither a host name nor an IP address"),
    ],
)
def test_invalid_lmtp_transports_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        parse_transports(text)


def test_settings_accept_lmtp_transports(monkeypatch):
    monkeypatch.setenv("KUBEMTA_TRANSPORTS", "local.test=lmtp:[127.0.0.1]:24;sock.test=lmtp:unix:/run/lmtp")
    settings = ResolverSettings()
    assert len(settings.transports) == 2


async def test_lmtp_host_route_resolves_a_and_aaaa_never_mx(fake_dns):
    fake_dns.add_mx("dovecot.mail.svc", [(10, "elsewhere.example")])
    fake_dns.add_address("dovecot.mail.svc", "A", ["10.0.0.7"])
    fake_dns.add_address("dovecot.mail.svc", "AAAA", ["fd00::7"])
    router = make_router(fake_dns, "local.test=lmtp:dovecot.mail.svc:2424")

    route = await router.route("local.test")

    assert isinstance(route, message_pb2.Route)
    assert route.kind == message_pb2.TRANSPORT_KIND_LMTP
    assert route.source == "transport"
    assert [(h.hostname, h.address, h.port, h.unix_socket) for h in route.hosts] == [
        ("dovecot.mail.svc", "10.0.0.7", 2424, ""),
        ("dovecot.mail.svc", "fd00::7", 2424, ""),
    ]
    assert ("dovecot.mail.svc", "MX") not in fake_dns.queries


async def test_lmtp_address_route_needs_no_dns(fake_dns):
    router = make_router(fake_dns, "local.test=lmtp:[127.0.0.5]:24;other.test=smtp:[127.0.0.6]:25")
    route = await router.route("local.test")
    assert isinstance(route, message_pb2.Route) and route.kind == message_pb2.TRANSPORT_KIND_LMTP
    assert [(h.address, h.port) for h in route.hosts] == [("127.0.0.5", 24)]
    smtp = await router.route("other.test")
    assert isinstance(smtp, message_pb2.Route) and smtp.kind == message_pb2.TRANSPORT_KIND_SMTP
    assert fake_dns.queries == []


async def test_lmtp_unix_socket_route_has_the_socket_and_no_address(fake_dns):
    router = make_router(fake_dns, ".local.test=lmtp:unix:/var/run/dovecot/lmtp")
    route = await router.route("mail.local.test")
    assert isinstance(route, message_pb2.Route)
    assert route.kind == message_pb2.TRANSPORT_KIND_LMTP and route.source == "transport"
    assert [(h.unix_socket, h.address, h.port) for h in route.hosts] == [("/var/run/dovecot/lmtp", "", 0)]
    assert route.provider == "other"
    assert fake_dns.queries == []
    assert _describe_hosts(route) == "/var/run/dovecot/lmtp"


async def test_unresolvable_lmtp_host_is_a_route_failure(fake_dns):
    router = make_router(fake_dns, "local.test=lmtp:missing.mail.svc:24")
    failure = await router.route("local.test")
    assert isinstance(failure, RouteFailure) and failure.source == "transport"
    assert "missing.mail.svc" in failure.diagnostic
