"""ServiceAccountVerifier with a fake reviewer: the cache, its lifetimes and bound, single flight, the mapping."""

import asyncio
import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from kubemta_ingress.api_auth import Principal
from kubemta_ingress.serviceaccount_identities import ServiceAccount, parse_identity_map
from kubemta_ingress.serviceaccounts import Outcome, ServiceAccountVerifier, TokenReviewUnavailable
from kubemta_ingress.users import Identity

NOW = 1_800_000_000.0
MAILER = ServiceAccount("apps", "mailer")
STRANGER = ServiceAccount("other", "app")


def token(subject: str, exp: float | None = NOW + 3600, salt: str = "") -> str:
    claims: dict[str, object] = {"sub": subject, "aud": ["kubemta"], "salt": salt}
    if exp is not None:
        claims["exp"] = exp
    parts = (b'{"alg":"RS256"}', json.dumps(claims).encode(), hashlib.sha256(subject.encode() + salt.encode()).digest())
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in parts)


class FakeReviewer:
    """Answers from a table; counts reviews; can be held (single flight) or fail."""

    def __init__(self) -> None:
        self.accounts: dict[str, ServiceAccount] = {}
        self.reviews: list[str] = []
        self.gate: asyncio.Event | None = None
        self.unavailable = False
        self.closed = False

    async def review(self, token: str) -> ServiceAccount | None:
        self.reviews.append(token)
        if self.gate is not None:
            await self.gate.wait()
        if self.unavailable:
            raise TokenReviewUnavailable("down")
        return self.accounts.get(token)

    async def close(self) -> None:
        self.closed = True


class Identities:
    def __init__(self, text: str) -> None:
        self.map = parse_identity_map(text)

    def identities(self, account: ServiceAccount) -> tuple[Identity, ...] | None:
        return self.map.identities(account)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def metric(name: str, result: str) -> float:
    return REGISTRY.get_sample_value(name, {"result": result}) or 0.0


@dataclass
class World:
    """A verifier's surroundings: the fake reviewer, the identities, and the two clocks the test moves."""

    reviewer: FakeReviewer = field(default_factory=FakeReviewer)
    identities: Identities = field(default_factory=lambda: Identities("apps/mailer:mailer@example.com\n"))
    monotonic: Clock = field(default_factory=lambda: Clock(1000.0))
    wall: Clock = field(default_factory=lambda: Clock(NOW))

    def build(self, *, cache_ttl: float = 600.0, negative_ttl: float = 10.0, cache_size: int = 100):
        return ServiceAccountVerifier(
            self.reviewer,
            self.identities,
            cache_ttl=cache_ttl,
            negative_ttl=negative_ttl,
            cache_size=cache_size,
            clock=self.monotonic,
            wall_clock=self.wall,
        )


@pytest.fixture
def world() -> World:
    return World()


async def test_authenticated_and_cached(world):
    verifier = world.build()
    good = token("mailer")
    world.reviewer.accounts[good] = MAILER
    hits, misses = metric("kubemta_tokenreview_cache_total", "hit"), metric("kubemta_tokenreview_cache_total", "miss")
    reviews = metric("kubemta_tokenreviews_total", "authenticated")
    expected = Principal("serviceaccount", "system:serviceaccount:apps:mailer", (Identity.parse("mailer@example.com"),))
    assert await verifier.verify(good) == expected
    assert await verifier.verify(good) == expected
    assert world.reviewer.reviews == [good]  # the second check asked nobody
    assert metric("kubemta_tokenreview_cache_total", "hit") == hits + 1
    assert metric("kubemta_tokenreview_cache_total", "miss") == misses + 1
    assert metric("kubemta_tokenreviews_total", "authenticated") == reviews + 1
    assert expected.sender().owns("mailer@example.com") and not expected.sender().owns("x@example.com")


async def test_positive_entries_live_until_the_ttl(world):
    verifier = world.build(cache_ttl=600.0)
    good = token("mailer", exp=NOW + 3600)
    world.reviewer.accounts[good] = MAILER
    assert await verifier.verify(good) is not None
    world.monotonic.now += 599
    assert await verifier.verify(good) is not None
    assert len(world.reviewer.reviews) == 1
    world.monotonic.now += 1
    assert await verifier.verify(good) is not None
    assert len(world.reviewer.reviews) == 2


async def test_positive_entries_never_outlive_the_token(world):
    verifier = world.build(cache_ttl=600.0)
    good = token("mailer", exp=NOW + 30)
    world.reviewer.accounts[good] = MAILER
    assert await verifier.verify(good) is not None
    world.monotonic.now += 29
    world.wall.now += 29
    assert await verifier.verify(good) is not None
    assert len(world.reviewer.reviews) == 1
    world.monotonic.now += 1
    world.wall.now += 1
    del world.reviewer.accounts[good]  # the API now says it expired
    assert await verifier.verify(good) is None
    assert len(world.reviewer.reviews) == 2


async def test_token_already_past_its_claimed_expiry_is_not_cached(world):
    verifier = world.build()
    odd = token("mailer", exp=NOW - 5)  # the API still accepted it (clock skew): believed, not remembered
    world.reviewer.accounts[odd] = MAILER
    assert await verifier.verify(odd) is not None
    assert await verifier.verify(odd) is not None
    assert len(world.reviewer.reviews) == 2


async def test_token_without_exp_is_cached_for_the_ttl(world):
    verifier = world.build(cache_ttl=60.0)
    legacy = token("mailer", exp=None)
    world.reviewer.accounts[legacy] = MAILER
    assert await verifier.verify(legacy) is not None
    world.monotonic.now += 59
    assert await verifier.verify(legacy) is not None
    world.monotonic.now += 1
    assert await verifier.verify(legacy) is not None
    assert len(world.reviewer.reviews) == 2


async def test_refusals_are_cached_for_the_negative_ttl(world):
    verifier = world.build(negative_ttl=10.0)
    bad = token("nobody")
    refused = metric("kubemta_tokenreviews_total", "refused")
    assert await verifier.check(bad) == (check := await verifier.check(bad))
    assert check.outcome is Outcome.REFUSED and check.principal is None
    assert len(world.reviewer.reviews) == 1
    world.monotonic.now += 10
    world.reviewer.accounts[bad] = MAILER  # e.g. the account was created meanwhile
    assert await verifier.verify(bad) is not None
    assert len(world.reviewer.reviews) == 2
    assert metric("kubemta_tokenreviews_total", "refused") == refused + 1


async def test_the_cache_is_bounded_least_recently_used_first(world):
    verifier = world.build(cache_size=2)
    tokens = [token("mailer", salt=str(n)) for n in range(3)]
    for item in tokens:
        world.reviewer.accounts[item] = MAILER
        assert await verifier.verify(item) is not None
    assert await verifier.verify(tokens[2]) is not None  # kept
    assert await verifier.verify(tokens[1]) is not None  # kept
    assert len(world.reviewer.reviews) == 3
    assert await verifier.verify(tokens[0]) is not None  # evicted: asked again
    assert len(world.reviewer.reviews) == 4


async def test_cache_of_size_zero_keeps_nothing(world):
    verifier = world.build(cache_size=0)
    good = token("mailer")
    world.reviewer.accounts[good] = MAILER
    assert await verifier.verify(good) is not None
    assert await verifier.verify(good) is not None
    assert len(world.reviewer.reviews) == 2


async def test_the_cache_keeps_no_token(world):
    verifier = world.build()
    good = token("mailer")
    world.reviewer.accounts[good] = MAILER
    await verifier.verify(good)
    cache = verifier._cache._entries  # noqa: SLF001  (looking for the token itself among the keys)
    assert list(cache) == [hashlib.sha256(good.encode()).digest()]
    assert all(good not in repr(value) for value in cache.values())


async def test_single_flight(world):
    verifier = world.build()
    good = token("mailer")
    world.reviewer.accounts[good] = MAILER
    world.reviewer.gate = asyncio.Event()
    checks = [asyncio.create_task(verifier.verify(good)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert len(world.reviewer.reviews) == 1
    checks[0].cancel()  # one caller giving up does not end the review for the others
    world.reviewer.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*checks[1:]), 5)
    assert all(result is not None and result.name == MAILER.username for result in results)
    assert len(world.reviewer.reviews) == 1
    assert verifier._in_flight == {}  # noqa: SLF001


async def test_unmapped_account_is_refused_and_reported_once(world, caplog):
    verifier = world.build()
    stranger = token("stranger")
    world.reviewer.accounts[stranger] = STRANGER
    unmapped = metric("kubemta_tokenreviews_total", "unmapped")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert (await verifier.check(stranger)).outcome is Outcome.UNMAPPED
    assert [r.getMessage() for r in caplog.records if "other/app" in r.getMessage()] == [
        "ServiceAccount other/app presented a valid token but is not in the ServiceAccount identities file: refused"
    ]
    assert metric("kubemta_tokenreviews_total", "unmapped") == unmapped + 1
    world.identities.map = parse_identity_map("other/*:app@example.net\n")  # the file changed: applies at once
    principal = await verifier.verify(stranger)
    assert principal is not None and principal.identities == (Identity.parse("app@example.net"),)
    assert len(world.reviewer.reviews) == 1
    assert verifier.listed(STRANGER) and not verifier.listed(MAILER)


async def test_api_errors_refuse_without_remembering(world, caplog):
    verifier = world.build()
    good = token("mailer")
    world.reviewer.accounts[good] = MAILER
    world.reviewer.unavailable = True
    errors = metric("kubemta_tokenreviews_total", "error")
    with caplog.at_level(logging.WARNING):
        assert (await verifier.check(good)).outcome is Outcome.UNAVAILABLE
        assert await verifier.verify(good) is None
    assert any("TokenReview failed" in r.getMessage() for r in caplog.records)
    assert metric("kubemta_tokenreviews_total", "error") == errors + 2
    world.reviewer.unavailable = False
    assert await verifier.verify(good) is not None
    assert len(world.reviewer.reviews) == 3


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not-a-jwt",
        "a.b.c",
        "x" * 100_000,
        "ab.cd.ef\r\nAUTH PLAIN",
        "ab.cd.e\x00f",
        "é" * 10,
        "\udcff\udcfe.ab.cd",
        "ab." + "c" * 9000 + ".ef",
    ],
)
async def test_garbage_never_reaches_the_reviewer(world, garbage):
    verifier = world.build()
    assert (await verifier.check(garbage)).outcome is Outcome.REFUSED
    assert world.reviewer.reviews == []


async def test_close_closes_the_reviewer_and_ends_reviews_in_flight(world):
    verifier = world.build()
    world.reviewer.gate = asyncio.Event()
    waiting = asyncio.create_task(verifier.verify(token("mailer")))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(verifier.close(), 5)
    assert world.reviewer.closed
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
