"""MTA-STS (RFC 8461): TXT and policy parsing, MX matching, the policy cache, and enforce/testing on routes."""

import random

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.mta_sts_patterns import mx_matches
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import LookupResult, LookupStatus
from kubemta_dns_resolver.mta_sts import (
    MtaStsResolver,
    PolicyFetchError,
    StsMode,
    parse_sts_policy,
    parse_sts_txt,
)
from kubemta_dns_resolver.route_tls import RouteTlsPolicy
from kubemta_dns_resolver.router import CachePolicy, RouteFailure, Router
from kubemta_dns_resolver.tls_policy import parse_tls_policy
from kubemta_dns_resolver.transports import parse_transports

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.dest.test\r\nmx: *.backup.dest.test\r\nmax_age: 86400\r\n"


def test_txt_record():
    assert parse_sts_txt(["v=STSv1; id=20240101T000000;"]) == "20240101T000000"
    assert parse_sts_txt(["v=spf1 -all", "v=STSv1;id=abc"]) == "abc"
    assert parse_sts_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # §3.1: more than one
    assert parse_sts_txt(["v=STSv1; id=bad-id!"]) is None
    assert parse_sts_txt(["v=STSv1;"]) is None
    assert parse_sts_txt([]) is None


def test_policy_parse():
    policy = parse_sts_policy(POLICY, "id1")
    assert policy.mode is StsMode.ENFORCE
    assert policy.mx == ("mx1.dest.test", "*.backup.dest.test")
    assert policy.max_age == 86400 and policy.policy_id == "id1"
    assert parse_sts_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n").max_age == 31557600
    assert (
        parse_sts_policy("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 60\nfoo: bar\n").mode is StsMode.TESTING
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "version"),
        ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1", "mode"),
        ("version: STSv1\nmode: enforce\nmax_age: 1", "without any mx"),
        ("version: STSv1\nmode: enforce\nmx: a\nmax_age: -1", "max_age"),
        ("<html>not a policy</html>", "key: value"),
    ],
)
def test_invalid_policies(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sts_policy(text)


def test_mx_matching():
    patterns = ["mx1.dest.test", "*.backup.dest.test"]
    assert mx_matches("MX1.dest.test.", patterns)
    assert mx_matches("b1.backup.dest.test", patterns)
    assert not mx_matches("a.b1.backup.dest.test", patterns)
    assert not mx_matches("backup.dest.test", patterns)
    assert not mx_matches("mx2.dest.test", patterns)


class FakeTxt:
    def __init__(self) -> None:
        self.records: dict[str, LookupResult[str]] = {}
        self.queries = 0

    def set(self, domain: str, *texts: str, ttl: float = 300.0) -> None:
        self.records["_mta-sts." + domain] = LookupResult(LookupStatus.OK, texts, ttl)

    async def txt(self, name: str) -> LookupResult[str]:
        self.queries += 1
        return self.records.get(name, LookupResult(LookupStatus.NXDOMAIN, ttl=60.0))


class FakeFetcher:
    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.fetches: list[str] = []

    async def fetch(self, domain: str) -> str:
        self.fetches.append(domain)
        if domain not in self.bodies:
            raise PolicyFetchError(f"https://mta-sts.{domain}/.well-known/mta-sts.txt answered HTTP 404")
        return self.bodies[domain]


async def test_policy_is_cached_until_the_id_changes(clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one", ttl=10)
    fetcher.bodies["dest.test"] = POLICY
    resolver = MtaStsResolver(txt, fetcher, clock=clock)

    first = await resolver.policy("dest.test")
    assert first is not None and first.policy_id == "one"
    assert await resolver.policy("Dest.Test.") is first
    assert fetcher.fetches == ["dest.test"]

    clock.advance(11)  # TXT expired: looked up again, same id -> no fetch
    assert await resolver.policy("dest.test") is first
    assert fetcher.fetches == ["dest.test"]

    txt.set("dest.test", "v=STSv1; id=two", ttl=10)
    clock.advance(11)
    fetcher.bodies["dest.test"] = POLICY.replace("enforce", "testing")
    second = await resolver.policy("dest.test")
    assert second is not None and second.mode is StsMode.TESTING and second.policy_id == "two"
    assert fetcher.fetches == ["dest.test", "dest.test"]


async def test_failed_fetch_keeps_a_valid_cached_policy_and_is_not_retried_at_once(clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one", ttl=1)
    fetcher.bodies["dest.test"] = POLICY
    resolver = MtaStsResolver(txt, fetcher, clock=clock)
    cached = await resolver.policy("dest.test")

    txt.set("dest.test", "v=STSv1; id=two", ttl=1)
    del fetcher.bodies["dest.test"]
    clock.advance(2)
    assert await resolver.policy("dest.test") is cached  # §5.1
    clock.advance(2)
    assert await resolver.policy("dest.test") is cached
    assert len(fetcher.fetches) == 2  # the failure is remembered, not re-fetched every time

    clock.advance(86400)  # the cached policy expired, the fetch still fails: no policy
    assert await resolver.policy("dest.test") is None


@pytest.mark.parametrize("error", [RuntimeError("a library bug"), UnicodeError("bad bytes"), KeyError("x")])
async def test_any_failure_of_a_fetch_is_a_failed_fetch(clock, error):
    """Whatever the fetch raises, the domain has no new policy (§5); the route job never crashes on it."""

    class Raising(FakeFetcher):
        async def fetch(self, domain: str) -> str:
            self.fetches.append(domain)
            raise error

    txt, fetcher = FakeTxt(), Raising()
    txt.set("dest.test", "v=STSv1; id=one")
    resolver = MtaStsResolver(txt, fetcher, clock=clock)
    assert await resolver.policy("dest.test") is None
    assert await resolver.policy("dest.test") is None
    assert fetcher.fetches == ["dest.test"]  # remembered as failed, not re-fetched for every job


async def test_no_txt_record_means_no_policy_and_no_fetch(clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    resolver = MtaStsResolver(txt, fetcher, clock=clock)
    assert await resolver.policy("plain.test") is None
    assert fetcher.fetches == []


def router_with(fake_dns, resolver, tls_policy="", transports=""):
    return Router(
        fake_dns,
        transports=parse_transports(transports),
        relayhost=None,
        delivery_port=25,
        cache=TtlLruCache(0),
        policy=CachePolicy(),
        rng=random.Random(1),
        tls=RouteTlsPolicy(parse_tls_policy(tls_policy), resolver),
    )


@pytest.fixture
def sts_dns(fake_dns):
    fake_dns.add_mx("dest.test", [(10, "mx1.dest.test"), (20, "rogue.example.net"), (30, "b1.backup.dest.test")])
    for name, address in [("mx1.dest.test", "192.0.2.1"), ("rogue.example.net", "192.0.2.2")]:
        fake_dns.add_address(name, "A", [address])
    fake_dns.add_address("b1.backup.dest.test", "A", ["192.0.2.3"])
    return fake_dns


async def test_enforce_gives_verify_with_patterns_and_drops_non_matching_hosts(sts_dns, clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one")
    fetcher.bodies["dest.test"] = POLICY
    route = await router_with(sts_dns, MtaStsResolver(txt, fetcher, clock=clock)).route("dest.test")

    assert isinstance(route, message_pb2.Route)
    assert [host.hostname for host in route.hosts] == ["mx1.dest.test", "b1.backup.dest.test"]
    assert route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    assert list(route.mta_sts_mx) == ["mx1.dest.test", "*.backup.dest.test"]
    assert route.tls_policy_source == "mta-sts enforce (id one)"


async def test_enforce_without_any_matching_host_is_a_temporary_failure(sts_dns, clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one")
    fetcher.bodies["dest.test"] = POLICY.replace("mx: mx1.dest.test\r\nmx: *.backup.dest.test", "mx: *.other.test")
    result = await router_with(sts_dns, MtaStsResolver(txt, fetcher, clock=clock)).route("dest.test")

    assert isinstance(result, RouteFailure)
    assert result.temporary and result.status == "4.7.5"
    assert "allows none of its MX hosts" in result.diagnostic and "*.other.test" in result.diagnostic


async def test_testing_mode_stays_opportunistic_and_an_explicit_entry_wins(sts_dns, clock):
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one")
    fetcher.bodies["dest.test"] = POLICY.replace("enforce", "testing")
    route = await router_with(sts_dns, MtaStsResolver(txt, fetcher, clock=clock)).route("dest.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_UNSPECIFIED and len(route.hosts) == 3
    assert route.tls_policy_source == "mta-sts testing"

    fetcher.bodies["dest.test"] = POLICY
    resolver = MtaStsResolver(txt, fetcher, clock=clock)
    route = await router_with(sts_dns, resolver, tls_policy="dest.test=encrypt").route("dest.test")
    assert route.tls_policy == message_pb2.TLS_POLICY_ENCRYPT and len(route.hosts) == 3
    assert list(route.mta_sts_mx) == []
