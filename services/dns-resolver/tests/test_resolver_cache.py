"""The TTL + LRU cache, and how the router uses it: TTLs, caps, no caching of temporary failures."""

import asyncio
import logging
import random
from collections import Counter

from kubemta.v1 import message_pb2
from kubemta_common.logs import message_context
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import LookupStatus
from kubemta_dns_resolver.router import CachePolicy, RouteFailure, Router
from kubemta_dns_resolver.transports import parse_transports


def test_entries_expire_after_their_ttl(clock):
    cache: TtlLruCache[str, int] = TtlLruCache(10, clock)
    cache.put("a", 1, 30)
    cache.put("b", 2, 60)
    clock.advance(29.9)
    assert cache.get("a") == 1
    clock.advance(0.1)
    assert cache.get("a") is None
    assert cache.get("b") == 2
    clock.advance(30)
    assert cache.get("b") is None
    assert len(cache) == 0


def test_least_recently_used_entry_is_evicted(clock):
    cache: TtlLruCache[str, int] = TtlLruCache(3, clock)
    for index, key in enumerate("abc"):
        cache.put(key, index, 100)
    assert cache.get("a") == 0  # a is now the most recently used
    cache.put("d", 3, 100)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(key) for key in "acd"] == [0, 2, 3]
    cache.put("c", 20, 100)  # replacing refreshes too
    cache.put("e", 4, 100)
    assert cache.get("a") is None
    assert [cache.get(key) for key in "cde"] == [20, 3, 4]


def test_zero_ttl_or_zero_size_stores_nothing(clock):
    cache: TtlLruCache[str, int] = TtlLruCache(3, clock)
    cache.put("a", 1, 0)
    assert cache.get("a") is None
    cache.put("a", 1, 10)
    cache.put("a", 2, 0)  # a result that must not be cached replaces an old one
    assert cache.get("a") is None
    disabled: TtlLruCache[str, int] = TtlLruCache(0, clock)
    disabled.put("a", 1, 10)
    assert disabled.get("a") is None


def make_router(dns, clock, *, size=100, max_ttl=86400.0, negative_ttl=60.0, transports="", seed=7):
    return Router(
        dns,
        transports=parse_transports(transports),
        relayhost=None,
        delivery_port=25,
        cache=TtlLruCache(size, clock),
        policy=CachePolicy(max_ttl=max_ttl, negative_ttl=negative_ttl),
        rng=random.Random(seed),
    )


def mx_queries(dns, name):
    return dns.queries.count((name, "MX"))


async def test_route_is_cached_for_the_smallest_ttl_of_the_records_used(fake_dns, clock, read_metric):
    fake_dns.add_mx("example.org", [(10, "mx1.example.org"), (20, "mx2.example.org")], ttl=300)
    fake_dns.add_address("mx1.example.org", "A", ["192.0.2.1"], ttl=120)
    fake_dns.add_address("mx2.example.org", "A", ["192.0.2.2"], ttl=200)
    router = make_router(fake_dns, clock)
    hits = read_metric("kubemta_dns_cache_hits_total")
    misses = read_metric("kubemta_dns_cache_misses_total")

    first = await router.route("example.org")
    clock.advance(119)
    second = await router.route("example.org")
    assert first == second
    assert mx_queries(fake_dns, "example.org") == 1
    assert read_metric("kubemta_dns_cache_hits_total") - hits == 1
    assert read_metric("kubemta_dns_cache_misses_total") - misses == 1

    clock.advance(1)  # 120 s: the A record of mx1 expired
    await router.route("example.org")
    assert mx_queries(fake_dns, "example.org") == 2
    assert read_metric("kubemta_dns_cache_misses_total") - misses == 2


async def test_max_ttl_caps_positive_answers(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "mx.example.org")], ttl=86400)
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"], ttl=86400)
    router = make_router(fake_dns, clock, max_ttl=600)
    await router.route("example.org")
    clock.advance(599)
    await router.route("example.org")
    assert mx_queries(fake_dns, "example.org") == 1
    clock.advance(1)
    await router.route("example.org")
    assert mx_queries(fake_dns, "example.org") == 2


async def test_negative_answers_are_cached_up_to_the_negative_ttl(fake_dns, clock):
    fake_dns.negative_ttl = 3600  # the zone's SOA says one hour
    fake_dns.add_mx("null.example", [(0, ".")], ttl=3600)
    router = make_router(fake_dns, clock, negative_ttl=60)
    for domain in ("nowhere.example", "null.example"):
        assert isinstance(await router.route(domain), RouteFailure)
        clock.advance(59)
        assert isinstance(await router.route(domain), RouteFailure)
        assert mx_queries(fake_dns, domain) == 1
        clock.advance(1)
        assert isinstance(await router.route(domain), RouteFailure)
        assert mx_queries(fake_dns, domain) == 2


async def test_negative_ttl_from_the_answer_applies_when_shorter(fake_dns, clock):
    fake_dns.negative_ttl = 10
    router = make_router(fake_dns, clock, negative_ttl=60)
    await router.route("nowhere.example")
    clock.advance(10)
    await router.route("nowhere.example")
    assert mx_queries(fake_dns, "nowhere.example") == 2


async def test_temporary_failures_are_not_cached(fake_dns, clock):
    fake_dns.fail("broken.example", "MX", LookupStatus.SERVFAIL)
    router = make_router(fake_dns, clock)
    for _ in range(3):
        result = await router.route("broken.example")
        assert isinstance(result, RouteFailure) and result.temporary
    assert mx_queries(fake_dns, "broken.example") == 3


async def test_partial_routes_are_cached_only_briefly(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "flaky.example.org"), (20, "mx2.example.org")], ttl=3600)
    fake_dns.fail("flaky.example.org", "A", LookupStatus.TIMEOUT)
    fake_dns.add_address("mx2.example.org", "A", ["192.0.2.2"], ttl=3600)
    router = make_router(fake_dns, clock, negative_ttl=30)
    await router.route("example.org")
    clock.advance(29)
    await router.route("example.org")
    assert mx_queries(fake_dns, "example.org") == 1
    clock.advance(1)
    await router.route("example.org")
    assert mx_queries(fake_dns, "example.org") == 2


async def test_cache_is_bounded(fake_dns, clock):
    for index in range(5):
        fake_dns.add_address(f"d{index}.example", "A", [f"192.0.2.{index}"])
    router = make_router(fake_dns, clock, size=3)
    for index in range(5):
        await router.route(f"d{index}.example")
    for index in range(2, 5):  # the three most recent are cached
        await router.route(f"d{index}.example")
    assert [mx_queries(fake_dns, f"d{index}.example") for index in range(5)] == [1, 1, 1, 1, 1]
    await router.route("d0.example")  # evicted: looked up again
    assert mx_queries(fake_dns, "d0.example") == 2


async def test_cached_route_is_shuffled_afresh_each_time(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "a.example.org"), (10, "b.example.org")])
    fake_dns.add_address("a.example.org", "A", ["192.0.2.1"])
    fake_dns.add_address("b.example.org", "A", ["192.0.2.2"])
    router = make_router(fake_dns, clock)
    firsts: Counter[str] = Counter()
    for _ in range(200):
        route = await router.route("example.org")
        assert isinstance(route, message_pb2.Route)
        firsts[route.hosts[0].hostname] += 1
    assert mx_queries(fake_dns, "example.org") == 1
    assert 60 < firsts["a.example.org"] < 140, firsts


async def test_static_nexthops_are_cached_separately_from_recipient_domains(fake_dns, clock):
    fake_dns.add_mx("relay.example", [(10, "in.relay.example")])
    fake_dns.add_address("in.relay.example", "A", ["192.0.2.5"])
    fake_dns.add_address("relay.example", "A", ["192.0.2.6"])
    router = make_router(fake_dns, clock, transports="a.example=smtp:relay.example;b.example=smtp:[relay.example]")
    a = await router.route("a.example")
    b = await router.route("b.example")
    assert isinstance(a, message_pb2.Route) and isinstance(b, message_pb2.Route)
    assert [host.address for host in a.hosts] == ["192.0.2.5"]
    assert [host.address for host in b.hosts] == ["192.0.2.6"]


async def test_concurrent_jobs_for_one_domain_share_one_lookup(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"])
    router = make_router(fake_dns, clock, size=0)  # even without a cache
    async with asyncio.timeout(5):
        routes = await asyncio.gather(*(router.route("example.org") for _ in range(10)))
    assert all(isinstance(route, message_pb2.Route) and len(route.hosts) == 1 for route in routes)
    assert mx_queries(fake_dns, "example.org") == 1


async def test_a_shared_lookup_logs_outside_the_message_that_started_it(fake_dns, clock, caplog):
    """The look-up task outlives the job that started it (later jobs await it): its lines name no queue id."""
    fake_dns.add_mx("example.org", [(10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"])
    looked_up = fake_dns.mx

    async def logging_mx(name):
        logging.getLogger("kubemta_dns_resolver.lookup").info("DNS %s MX", name)
        return await looked_up(name)

    fake_dns.mx = logging_mx
    router = make_router(fake_dns, clock, size=0)
    caplog.set_level(logging.INFO, logger="kubemta_dns_resolver.lookup")
    with message_context("QFIRST"):
        logging.getLogger("kubemta_dns_resolver.lookup").info("in the job")
        async with asyncio.timeout(5):
            await router.route("example.org")
    assert [(record.getMessage(), getattr(record, "queue_id", "missing")) for record in caplog.records] == [
        ("in the job", "QFIRST"),
        ("DNS example.org MX", None),
    ]
