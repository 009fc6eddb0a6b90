"""Router: transport > relayhost > DNS; MX ordering, implicit MX, null MX, NXDOMAIN, SERVFAIL (faked DNS)."""

import random
from collections import Counter

from kubemta.v1 import message_pb2
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import DnspythonLookup, LookupStatus
from kubemta_dns_resolver.router import CachePolicy, RouteCache, RouteFailure, Router
from kubemta_dns_resolver.transports import parse_relayhost, parse_transports


def make_router(dns, *, transports="", relayhost="", port=25, seed=1, cache_size=0, clock=None):
    cache: RouteCache = TtlLruCache(cache_size) if clock is None else TtlLruCache(cache_size, clock)
    return Router(
        dns,
        transports=parse_transports(transports),
        relayhost=parse_relayhost(relayhost),
        delivery_port=port,
        cache=cache,
        policy=CachePolicy(max_ttl=86400, negative_ttl=60),
        rng=random.Random(seed),
    )


def hosts(route):
    assert isinstance(route, message_pb2.Route), route
    return [(host.hostname, host.address, host.port, host.preference) for host in route.hosts]


async def test_transport_wins_over_relayhost_and_dns(fake_dns):
    fake_dns.add_mx("example.com", [(10, "mx.example.com")])
    fake_dns.add_address("mx.example.com", "A", ["192.0.2.10"])
    fake_dns.add_address("relay.example.net", "A", ["192.0.2.20"])
    fake_dns.add_address("smarthost.example.net", "A", ["192.0.2.30"])
    router = make_router(
        fake_dns, transports=".example.com=smtp:[relay.example.net]:2525", relayhost="[smarthost.example.net]:587"
    )

    sub = await router.route("a.example.com")
    assert isinstance(sub, message_pb2.Route) and sub.source == "transport"
    assert hosts(sub) == [("relay.example.net", "192.0.2.20", 2525, 0)]
    assert sub.kind == message_pb2.TRANSPORT_KIND_SMTP

    other = await router.route("example.com")  # `.example.com` does not match example.com itself
    assert isinstance(other, message_pb2.Route) and other.source == "relayhost"
    assert hosts(other) == [("smarthost.example.net", "192.0.2.30", 587, 0)]
    assert ("example.com", "MX") not in fake_dns.queries


async def test_relayhost_wins_over_dns(fake_dns):
    fake_dns.add_mx("example.org", [(10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.10"])
    router = make_router(fake_dns, relayhost="[192.0.2.99]:2525")
    route = await router.route("example.org")
    assert isinstance(route, message_pb2.Route) and route.source == "relayhost"
    assert hosts(route) == [("192.0.2.99", "192.0.2.99", 2525, 0)]
    assert fake_dns.queries == []  # an IP literal needs no DNS


async def test_without_static_routes_dns_decides(fake_dns):
    fake_dns.add_mx("example.org", [(10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.10"])
    router = make_router(fake_dns, transports="example.com=smtp:[192.0.2.1]")
    route = await router.route("Example.ORG.")
    assert isinstance(route, message_pb2.Route) and route.source == "mx"
    assert hosts(route) == [("mx.example.org", "192.0.2.10", 25, 10)]


async def test_bracketed_nexthop_skips_mx_and_plain_nexthop_looks_up_mx(fake_dns):
    fake_dns.add_mx("relay.example.net", [(5, "in1.relay.example.net")])
    fake_dns.add_address("in1.relay.example.net", "A", ["192.0.2.41"])
    fake_dns.add_address("relay.example.net", "A", ["192.0.2.40"])
    router = make_router(
        fake_dns, transports="a.example=smtp:[relay.example.net]:26;b.example=smtp:relay.example.net:27", port=2525
    )

    bracketed = await router.route("a.example")
    assert hosts(bracketed) == [("relay.example.net", "192.0.2.40", 26, 0)]
    assert ("relay.example.net", "MX") not in fake_dns.queries

    plain = await router.route("b.example")
    assert hosts(plain) == [("in1.relay.example.net", "192.0.2.41", 27, 5)]
    assert ("relay.example.net", "MX") in fake_dns.queries


async def test_nexthop_without_port_uses_the_delivery_port(fake_dns):
    router = make_router(fake_dns, transports="a.example=smtp:[192.0.2.5]", port=2525)
    assert hosts(await router.route("a.example")) == [("192.0.2.5", "192.0.2.5", 2525, 0)]


async def test_mx_sorted_by_preference_with_a_before_aaaa(fake_dns):
    fake_dns.add_mx("example.org", [(20, "mx2.example.org"), (10, "mx1.example.org"), (30, "mx3.example.org")])
    fake_dns.add_address("mx1.example.org", "A", ["192.0.2.1"])
    fake_dns.add_address("mx1.example.org", "AAAA", ["2001:db8::1"])
    fake_dns.add_address("mx2.example.org", "AAAA", ["2001:db8::2"])
    fake_dns.add_address("mx3.example.org", "A", ["192.0.2.3", "192.0.2.4"])
    route = await make_router(fake_dns, port=2526).route("example.org")
    assert hosts(route) == [
        ("mx1.example.org", "192.0.2.1", 2526, 10),
        ("mx1.example.org", "2001:db8::1", 2526, 10),
        ("mx2.example.org", "2001:db8::2", 2526, 20),
        ("mx3.example.org", "192.0.2.3", 2526, 30),
        ("mx3.example.org", "192.0.2.4", 2526, 30),
    ]
    assert route.source == "mx" and route.provider == "other"


async def test_provider_comes_from_the_mx_hosts(fake_dns):
    fake_dns.add_mx("gmail.example", [(5, "gmail-smtp-in.l.google.com")])
    fake_dns.add_address("gmail-smtp-in.l.google.com", "A", ["192.0.2.50"])
    route = await make_router(fake_dns).route("gmail.example")
    assert isinstance(route, message_pb2.Route) and route.provider == "google"


async def test_equal_preferences_are_shuffled_lower_preference_stays_last(fake_dns):
    fake_dns.add_mx("example.org", [(10, "a.example.org"), (10, "b.example.org"), (20, "c.example.org")])
    for name, address in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        fake_dns.add_address(f"{name}.example.org", "A", [address])
    router = make_router(fake_dns, seed=42)
    firsts: Counter[str] = Counter()
    for _ in range(400):
        order = [host[0] for host in hosts(await router.route("example.org"))]
        assert sorted(order[:2]) == ["a.example.org", "b.example.org"]
        assert order[2] == "c.example.org"
        firsts[order[0]] += 1
    assert 140 < firsts["a.example.org"] < 260, firsts  # about half each (seeded, so deterministic)


async def test_duplicate_mx_hosts_are_tried_once_at_their_best_preference(fake_dns):
    fake_dns.add_mx("example.org", [(20, "mx.example.org"), (10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"])
    assert hosts(await make_router(fake_dns).route("example.org")) == [("mx.example.org", "192.0.2.1", 25, 10)]


async def test_no_mx_uses_the_implicit_mx(fake_dns):
    fake_dns.add_address("example.org", "A", ["192.0.2.8"])
    fake_dns.add_address("example.org", "AAAA", ["2001:db8::8"])
    route = await make_router(fake_dns).route("example.org")
    assert isinstance(route, message_pb2.Route) and route.source == "implicit-mx"
    assert hosts(route) == [("example.org", "192.0.2.8", 25, 0), ("example.org", "2001:db8::8", 25, 0)]


async def test_null_mx_is_a_permanent_5_1_10(fake_dns):
    fake_dns.add_mx("example.org", [(0, ".")])
    result = await make_router(fake_dns).route("example.org")
    assert result == RouteFailure(False, "5.1.10", "Recipient address has null MX", "mx")


async def test_root_exchange_among_real_mx_is_ignored(fake_dns):
    fake_dns.add_mx("example.org", [(0, "."), (10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"])
    assert hosts(await make_router(fake_dns).route("example.org")) == [("mx.example.org", "192.0.2.1", 25, 10)]


async def test_nxdomain_is_a_permanent_5_1_2(fake_dns):
    result = await make_router(fake_dns).route("nowhere.example")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (False, "5.1.2", "mx")
    assert result.diagnostic.startswith("Host or domain name not found")


async def test_nxdomain_of_the_implicit_mx_is_a_permanent_5_1_2(fake_dns):
    fake_dns.fail("example.org", "MX", LookupStatus.NODATA)  # then A/AAAA: NXDOMAIN
    result = await make_router(fake_dns).route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (False, "5.1.2", "implicit-mx")


async def test_domain_without_mx_and_address_is_a_permanent_5_4_4(fake_dns):
    fake_dns.add_name("example.org")
    result = await make_router(fake_dns).route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (False, "5.4.4", "implicit-mx")


async def test_servfail_and_timeout_are_temporary_4_4_3(fake_dns):
    fake_dns.fail("broken.example", "MX", LookupStatus.SERVFAIL)
    fake_dns.fail("slow.example", "MX", LookupStatus.TIMEOUT)
    router = make_router(fake_dns)
    for domain in ("broken.example", "slow.example"):
        result = await router.route(domain)
        assert isinstance(result, RouteFailure)
        assert (result.temporary, result.status) == (True, "4.4.3")


async def test_implicit_mx_servfail_is_temporary(fake_dns):
    fake_dns.add_address("example.org", "AAAA", [])
    fake_dns.fail("example.org", "A", LookupStatus.SERVFAIL)
    fake_dns.fail("example.org", "AAAA", LookupStatus.TIMEOUT)
    result = await make_router(fake_dns).route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (True, "4.4.3", "implicit-mx")


async def test_mx_hosts_without_address_are_skipped(fake_dns):
    fake_dns.add_mx("example.org", [(10, "gone.example.org"), (20, "mx2.example.org")])
    fake_dns.add_address("mx2.example.org", "A", ["192.0.2.2"])
    assert hosts(await make_router(fake_dns).route("example.org")) == [("mx2.example.org", "192.0.2.2", 25, 20)]


async def test_no_address_for_any_mx_host_is_permanent_5_4_4(fake_dns):
    fake_dns.add_mx("example.org", [(10, "gone1.example.org"), (20, "gone2.example.org")])
    result = await make_router(fake_dns).route("example.org")
    assert result == RouteFailure(False, "5.4.4", "unable to route: no address for any MX host", "mx")


async def test_no_address_with_a_temporary_failure_is_temporary_4_4_3(fake_dns):
    fake_dns.add_mx("example.org", [(10, "gone.example.org"), (20, "flaky.example.org")])
    fake_dns.fail("flaky.example.org", "A", LookupStatus.SERVFAIL)
    result = await make_router(fake_dns).route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status) == (True, "4.4.3")


async def test_partial_temporary_failure_still_routes_to_the_hosts_found(fake_dns):
    fake_dns.add_mx("example.org", [(10, "flaky.example.org"), (20, "mx2.example.org")])
    fake_dns.fail("flaky.example.org", "A", LookupStatus.TIMEOUT)
    fake_dns.add_address("mx2.example.org", "A", ["192.0.2.2"])
    assert hosts(await make_router(fake_dns).route("example.org")) == [("mx2.example.org", "192.0.2.2", 25, 20)]


async def test_unresolvable_relayhost_is_unable_to_route_not_a_bad_recipient_domain(fake_dns):
    router = make_router(fake_dns, relayhost="relay.nowhere.example")
    result = await router.route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (False, "5.4.4", "relayhost")
    assert "relay.nowhere.example" in result.diagnostic


async def test_address_literal_domain_is_connected_to_directly(fake_dns):
    router = make_router(fake_dns, port=2525)
    assert hosts(await router.route("[192.0.2.9]")) == [("192.0.2.9", "192.0.2.9", 2525, 0)]
    assert hosts(await router.route("[IPv6:2001:db8::9]")) == [("2001:db8::9", "2001:db8::9", 2525, 0)]
    assert fake_dns.queries == []


async def test_invalid_domain_names_are_not_queried_and_fail_permanently():
    lookup = DnspythonLookup([("127.0.0.1", 9)], 0.2)  # never asked: every name below is invalid
    router = make_router(lookup)
    for domain in ("", "a..example", "x" * 64 + ".example"):
        result = await router.route(domain)
        assert isinstance(result, RouteFailure), domain
        assert (result.temporary, result.status) == (False, "5.1.2"), result
