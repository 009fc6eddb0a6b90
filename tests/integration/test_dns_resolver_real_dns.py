"""The dns-resolver's router against a real authoritative DNS server (NSD on a random loopback address).

Covers MX preference order, shuffling among equal preferences, implicit MX, null MX,
NXDOMAIN, SERVFAIL, a timeout, and the cache honouring a short TTL (seen in the metrics).
"""

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.config_types import parse_nameserver
from kubemta_common.transport_map import parse_transports
from kubemta_dns_resolver.__main__ import build_router
from kubemta_dns_resolver.router import RouteFailure, Router
from kubemta_dns_resolver.settings import ResolverSettings
from tests.harness.dns_server import DnsServer, free_port, random_loopback_address, zone_text

ZONE = "kubemta.test"
SERVFAIL_ZONE = "broken.test"
RECORDS = [
    "two MX 20 mx2.two",
    "two MX 10 mx1.two",
    "mx1.two A 127.0.0.2",
    "mx2.two A 127.0.0.3",
    "mx2.two AAAA ::1",
    "equal MX 10 a.equal",
    "equal MX 10 b.equal",
    "a.equal A 127.0.0.4",
    "b.equal A 127.0.0.5",
    "implicit A 127.0.0.6",
    "null MX 0 .",
    "dangling MX 10 gone",
    "short 1 MX 10 mx.short",
    "mx.short 1 A 127.0.0.7",
    "relay A 127.0.0.8",
]


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    address = random_loopback_address()
    server = DnsServer(
        Path(tmp_path_factory.mktemp("nsd")),
        address,
        free_port(address),
        {ZONE: zone_text(ZONE, RECORDS, ttl=300, negative_ttl=60)},
        servfail_zones=[SERVFAIL_ZONE],
    )
    with server:
        yield server


def make_router(nameserver: str, transports: str = "") -> Router:
    return build_router(
        ResolverSettings(
            dns_nameservers=[parse_nameserver(nameserver)],
            dns_timeout=3.0,
            delivery_port=2525,
            transports=parse_transports(transports),
        )
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def hosts(route: message_pb2.Route | RouteFailure) -> list[tuple[str, str, int, int]]:
    assert isinstance(route, message_pb2.Route), route
    return [(host.hostname, host.address, host.port, host.preference) for host in route.hosts]


async def test_mx_by_preference_a_then_aaaa(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver)
    ok = sample("kubemta_dns_lookups_total", result="ok")
    nodata = sample("kubemta_dns_lookups_total", result="nodata")
    async with asyncio.timeout(10):
        route = await router.route("two.kubemta.test")
    assert isinstance(route, message_pb2.Route) and route.source == "mx" and route.provider == "other"
    assert hosts(route) == [
        ("mx1.two.kubemta.test", "127.0.0.2", 2525, 10),
        ("mx2.two.kubemta.test", "127.0.0.3", 2525, 20),
        ("mx2.two.kubemta.test", "::1", 2525, 20),
    ]
    # MX, A and AAAA of mx1 (AAAA: no data), A and AAAA of mx2
    assert sample("kubemta_dns_lookups_total", result="ok") - ok == 4
    assert sample("kubemta_dns_lookups_total", result="nodata") - nodata == 1


async def test_equal_preferences_come_in_both_orders(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver)
    firsts: Counter[str] = Counter()
    async with asyncio.timeout(10):
        for _ in range(40):
            order = [host[0] for host in hosts(await router.route("equal.kubemta.test"))]
            assert sorted(order) == ["a.equal.kubemta.test", "b.equal.kubemta.test"]
            firsts[order[0]] += 1
    assert set(firsts) == {"a.equal.kubemta.test", "b.equal.kubemta.test"}  # chance of failing: 2 * 0.5**40


async def test_implicit_mx(dns_server: DnsServer) -> None:
    async with asyncio.timeout(10):
        route = await make_router(dns_server.nameserver).route("implicit.kubemta.test")
    assert isinstance(route, message_pb2.Route) and route.source == "implicit-mx"
    assert hosts(route) == [("implicit.kubemta.test", "127.0.0.6", 2525, 0)]


async def test_null_mx_is_permanent_5_1_10(dns_server: DnsServer) -> None:
    async with asyncio.timeout(10):
        result = await make_router(dns_server.nameserver).route("null.kubemta.test")
    assert result == RouteFailure(False, "5.1.10", "Recipient address has null MX", "mx")


async def test_nxdomain_is_permanent_5_1_2(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver)
    before = sample("kubemta_dns_lookups_total", result="nxdomain")
    async with asyncio.timeout(10):
        result = await router.route("nope.kubemta.test")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status, result.source) == (False, "5.1.2", "mx")
    assert "nope.kubemta.test" in result.diagnostic
    assert sample("kubemta_dns_lookups_total", result="nxdomain") - before == 1


async def test_mx_host_without_address_is_permanent_5_4_4(dns_server: DnsServer) -> None:
    async with asyncio.timeout(10):
        result = await make_router(dns_server.nameserver).route("dangling.kubemta.test")
    assert result == RouteFailure(False, "5.4.4", "unable to route: no address for any MX host", "mx")


async def test_servfail_is_temporary_4_4_3_and_not_cached(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver)
    before = sample("kubemta_dns_lookups_total", result="servfail")
    async with asyncio.timeout(10):
        for _ in range(2):
            result = await router.route("mail.broken.test")
            assert isinstance(result, RouteFailure)
            assert (result.temporary, result.status, result.source) == (True, "4.4.3", "mx")
            assert "SERVFAIL" in result.diagnostic
    assert sample("kubemta_dns_lookups_total", result="servfail") - before == 2


async def test_transport_nexthop_resolved_over_dns(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver, transports="elsewhere.example=smtp:[relay.kubemta.test]:2626")
    async with asyncio.timeout(10):
        route = await router.route("elsewhere.example")
    assert isinstance(route, message_pb2.Route) and route.source == "transport"
    assert hosts(route) == [("relay.kubemta.test", "127.0.0.8", 2626, 0)]


async def test_short_ttl_is_cached_then_expires(dns_server: DnsServer) -> None:
    router = make_router(dns_server.nameserver)
    hits = sample("kubemta_dns_cache_hits_total")
    misses = sample("kubemta_dns_cache_misses_total")
    ok = sample("kubemta_dns_lookups_total", result="ok")
    async with asyncio.timeout(10):
        first = await router.route("short.kubemta.test")
        second = await router.route("short.kubemta.test")
    assert hosts(first) == hosts(second) == [("mx.short.kubemta.test", "127.0.0.7", 2525, 10)]
    assert sample("kubemta_dns_cache_hits_total") - hits == 1
    assert sample("kubemta_dns_cache_misses_total") - misses == 1
    assert sample("kubemta_dns_lookups_total", result="ok") - ok == 2  # MX and A, once
    await asyncio.sleep(1.1)  # the records' TTL is 1 s
    async with asyncio.timeout(10):
        third = await router.route("short.kubemta.test")
    assert hosts(third) == hosts(first)
    assert sample("kubemta_dns_cache_misses_total") - misses == 2
    assert sample("kubemta_dns_lookups_total", result="ok") - ok == 4


async def test_silent_name_server_times_out_as_temporary_4_4_3() -> None:
    address = random_loopback_address()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # receives queries, never answers
        silent.bind((address, 0))
        nameserver = f"{address}:{silent.getsockname()[1]}"
        router = build_router(ResolverSettings(dns_nameservers=[parse_nameserver(nameserver)], dns_timeout=0.5))
        before = sample("kubemta_dns_lookups_total", result="timeout")
        started = time.monotonic()
        async with asyncio.timeout(5):
            result = await router.route("example.org")
    assert isinstance(result, RouteFailure)
    assert (result.temporary, result.status) == (True, "4.4.3")
    assert time.monotonic() - started < 3
    assert sample("kubemta_dns_lookups_total", result="timeout") - before == 1
