"""The router shares the routes it builds as route answers: fresh for what is left of the DNS answers behind
them (capped), of their MTA-STS TXT answer and policy, or KUBEMTA_ROUTE_ANSWER_TTL for static routes;
failures and incomplete routes are never shared."""

import random

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import LookupResult, LookupStatus
from kubemta_dns_resolver.mta_sts import MtaStsResolver, PolicyFetchError
from kubemta_dns_resolver.route_tls import RouteTlsPolicy
from kubemta_dns_resolver.router import CachePolicy, RouteFailure, Router
from kubemta_dns_resolver.tls_policy import parse_tls_policy
from kubemta_dns_resolver.transports import parse_relayhost, parse_transports

POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.dest.test\r\nmax_age: 86400\r\n"


class Answers:
    """Records what the router offers."""

    def __init__(self) -> None:
        self.offers: list[tuple[str, message_pb2.Route, float]] = []

    def offer(self, domain: str, route: message_pb2.Route, fresh_for: float) -> None:
        copy = message_pb2.Route()
        copy.CopyFrom(route)
        self.offers.append((domain, copy, fresh_for))


class FakeTxt:
    def __init__(self) -> None:
        self.records: dict[str, LookupResult[str]] = {}

    def set(self, domain: str, *texts: str, ttl: float = 300.0) -> None:
        self.records["_mta-sts." + domain] = LookupResult(LookupStatus.OK, texts, ttl)

    async def txt(self, name: str) -> LookupResult[str]:
        return self.records.get(name, LookupResult(LookupStatus.NXDOMAIN, ttl=60.0))


class FakeFetcher:
    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}

    async def fetch(self, domain: str) -> str:
        if domain not in self.bodies:
            raise PolicyFetchError("HTTP 404")
        return self.bodies[domain]


def make_router(dns, clock, answers, *, transports="", relayhost="", tls=None, static_ttl=60.0, max_ttl=86400.0):
    return Router(
        dns,
        transports=parse_transports(transports),
        relayhost=parse_relayhost(relayhost),
        delivery_port=25,
        cache=TtlLruCache(100, clock),
        policy=CachePolicy(max_ttl=max_ttl),
        rng=random.Random(1),
        tls=tls,
        answers=answers,
        static_answer_ttl=static_ttl,
    )


async def test_an_mx_route_is_offered_for_what_is_left_of_its_dns_answers(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "mx1.example.org")], ttl=300)
    fake_dns.add_address("mx1.example.org", "A", ["192.0.2.1"], ttl=120)
    answers = Answers()
    router = make_router(fake_dns, clock, answers)
    route = await router.route("Example.ORG.")
    assert isinstance(route, message_pb2.Route)
    ((domain, offered, fresh_for),) = answers.offers
    assert (domain, offered, fresh_for) == ("example.org", route, 120)
    clock.advance(100)
    await router.route("example.org")  # from the cache: 20 s left
    assert answers.offers[-1][2] == pytest.approx(20)


async def test_the_cap_on_cached_answers_caps_their_freshness(fake_dns, clock):
    fake_dns.add_mx("example.org", [(10, "mx1.example.org")], ttl=86400)
    fake_dns.add_address("mx1.example.org", "A", ["192.0.2.1"], ttl=86400)
    answers = Answers()
    await make_router(fake_dns, clock, answers, max_ttl=600).route("example.org")
    assert answers.offers[0][2] == 600


async def test_failures_and_incomplete_routes_are_never_offered(fake_dns, clock):
    fake_dns.fail("broken.example", "MX", LookupStatus.SERVFAIL)
    fake_dns.add_mx("half.example", [(10, "mx1.half.example"), (20, "mx2.half.example")])
    fake_dns.add_address("mx1.half.example", "A", ["192.0.2.1"])
    fake_dns.fail("mx2.half.example", "A", LookupStatus.TIMEOUT)
    answers = Answers()
    router = make_router(fake_dns, clock, answers)
    for domain in ("nowhere.example", "broken.example"):
        assert isinstance(await router.route(domain), RouteFailure)
    assert isinstance(await router.route("half.example"), message_pb2.Route)
    assert answers.offers == []


@pytest.mark.parametrize(
    ("transports", "relayhost"),
    [("local.test=lmtp:[192.0.2.24]:24", ""), ("", "[192.0.2.25]:587"), ("local.test=lmtp:unix:/run/lmtp", "")],
)
async def test_static_routes_are_fresh_for_the_setting(fake_dns, clock, transports, relayhost):
    answers = Answers()
    router = make_router(fake_dns, clock, answers, transports=transports, relayhost=relayhost, static_ttl=45)
    assert isinstance(await router.route("local.test"), message_pb2.Route)
    assert [(domain, fresh_for) for domain, _, fresh_for in answers.offers] == [("local.test", 45)]


async def test_a_relayhost_by_name_is_fresh_for_the_setting_or_its_address_ttl_if_shorter(fake_dns, clock):
    fake_dns.add_address("relay.example.net", "A", ["192.0.2.30"], ttl=20)
    answers = Answers()
    router = make_router(fake_dns, clock, answers, relayhost="[relay.example.net]:587", static_ttl=60)
    await router.route("anywhere.example")
    assert answers.offers[0][2] == 20


async def test_a_static_ttl_of_zero_offers_nothing(fake_dns, clock):
    answers = Answers()
    router = make_router(fake_dns, clock, answers, relayhost="[192.0.2.25]:587", static_ttl=0)
    await router.route("anywhere.example")
    assert answers.offers == []


async def test_an_mta_sts_route_is_fresh_no_longer_than_its_txt_answer(fake_dns, clock):
    fake_dns.add_mx("dest.test", [(10, "mx1.dest.test")], ttl=3000)
    fake_dns.add_address("mx1.dest.test", "A", ["192.0.2.1"], ttl=3000)
    txt, fetcher = FakeTxt(), FakeFetcher()
    txt.set("dest.test", "v=STSv1; id=one", ttl=90)
    fetcher.bodies["dest.test"] = POLICY
    tls = RouteTlsPolicy(parse_tls_policy(""), MtaStsResolver(txt, fetcher, clock=clock))
    answers = Answers()
    router = make_router(fake_dns, clock, answers, tls=tls)
    route = await router.route("dest.test")
    assert isinstance(route, message_pb2.Route) and route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    ((_, offered, fresh_for),) = answers.offers
    assert offered.tls_policy == message_pb2.TLS_POLICY_VERIFY and fresh_for == 90
    clock.advance(30)
    await router.route("dest.test")
    assert answers.offers[-1][2] == pytest.approx(60)


async def test_an_explicit_tls_policy_entry_does_not_limit_freshness(fake_dns, clock):
    fake_dns.add_mx("dest.test", [(10, "mx1.dest.test")], ttl=3000)
    fake_dns.add_address("mx1.dest.test", "A", ["192.0.2.1"], ttl=3000)
    txt = FakeTxt()
    txt.set("dest.test", "v=STSv1; id=one", ttl=90)
    tls = RouteTlsPolicy(parse_tls_policy("dest.test=encrypt"), MtaStsResolver(txt, FakeFetcher(), clock=clock))
    answers = Answers()
    await make_router(fake_dns, clock, answers, tls=tls).route("dest.test")
    assert answers.offers[0][2] == 3000
