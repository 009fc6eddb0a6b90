"""The HTTP API's domain checks over real HTTP (HttpServer on loopback, httpx), with a resolver stand-in that
blocks on an event: the concurrency limit and the rate limit (429 + Retry-After, never queued), the cache (TTL,
LRU, no DNS look-up, no rate budget), single flight for one domain, and the per-check deadline (504)."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from kubemta_ingress.check_service import CheckLimits
from kubemta_mail_auth.domain_check import DomainReport
from tests.harness.api_kit import GatedResolver, SteppingClock, serve_api
from tests.harness.ingress_kit import eventually

GENEROUS = CheckLimits(per_minute=6000, burst=1000, concurrency=100, timeout=60.0, cache_ttl=60.0, cache_size=100)


def checks_total(result: str) -> float:
    return REGISTRY.get_sample_value("kubemta_domain_checks_total", {"result": result}) or 0.0


def test_every_result_is_preinitialised():
    for result in ("ok", "problems", "cached", "invalid", "unauthorized", "closed", "rate_limited", "busy", "timeout"):
        assert REGISTRY.get_sample_value("kubemta_domain_checks_total", {"result": result}) is not None, result


async def test_over_the_concurrency_limit_is_429_with_retry_after_never_queued():
    resolver = GatedResolver()
    limits = CheckLimits(per_minute=6000, burst=1000, concurrency=2, timeout=60.0, cache_ttl=60.0, cache_size=100)
    async with serve_api(resolver, limits) as api:
        first = asyncio.create_task(api.get("one.api.test"))
        second = asyncio.create_task(api.get("two.api.test"))
        await resolver.asked("one.api.test")
        await resolver.asked("two.api.test")
        before = checks_total("busy")
        refused = await api.get("three.api.test")  # answered while both checks still wait on DNS
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/json"
        assert "2 domain checks are running" in refused.json()["detail"]
        assert resolver.asked_about("three.api.test") == 0 and checks_total("busy") - before == 1
        assert not first.done() and not second.done()
        resolver.gate.set()
        assert [(await task).status_code for task in (first, second)] == [200, 200]
        assert api.service.running == 0
        assert (await api.get("three.api.test")).status_code == 200  # the slots are free again


async def test_over_the_rate_is_429_with_retry_after_until_the_bucket_refills():
    clock = SteppingClock()
    limits = CheckLimits(per_minute=2, burst=2, concurrency=10, timeout=60.0, cache_ttl=3600.0, cache_size=100)
    async with serve_api(GatedResolver(open_gate=True), limits, clock) as api:
        assert (await api.get("one.api.test")).status_code == 200
        assert (await api.get("two.api.test")).status_code == 200
        before = checks_total("rate_limited")
        refused = await api.get("three.api.test")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "30"  # 2 a minute: one per 30 s
        assert "at most 2 a minute" in refused.json()["detail"]
        clock.now += 20
        again = await api.get("three.api.test")
        assert again.status_code == 429 and again.headers["retry-after"] == "10"
        assert checks_total("rate_limited") - before == 2
        clock.now += 10
        assert (await api.get("three.api.test")).status_code == 200
        assert (await api.get("four.api.test")).status_code == 429


async def test_a_cached_answer_costs_no_dns_lookup_and_no_rate_budget():
    clock = SteppingClock()
    resolver = GatedResolver(open_gate=True)
    limits = CheckLimits(per_minute=1, burst=1, concurrency=10, timeout=60.0, cache_ttl=60.0, cache_size=100)
    async with serve_api(resolver, limits, clock) as api:
        fresh = await api.get("cache.api.test")
        assert fresh.status_code == 200 and "age" not in fresh.headers
        asked = resolver.asked_about("cache.api.test")
        assert asked > 0
        before = checks_total("cached")
        clock.now += 59
        for spelling in ("cache.api.test", "CACHE.Api.Test.", "cache.api.test"):  # normalised: one entry
            cached = await api.get(spelling)
            assert cached.status_code == 200 and cached.headers["age"] == "59"
            assert DomainReport.model_validate(cached.json()) == DomainReport.model_validate(fresh.json())
        assert resolver.asked_about("cache.api.test") == asked  # no look-up, and the empty bucket did not refuse
        assert checks_total("cached") - before == 3
        assert (await api.get("other.api.test")).status_code == 429  # the bucket is empty: the hits were free
        clock.now += 1  # the TTL is over (and a token is back): checked again
        assert "age" not in (await api.get("cache.api.test")).headers
        assert resolver.asked_about("cache.api.test") == 2 * asked


async def test_the_cache_keeps_the_most_recently_used_reports():
    resolver = GatedResolver(open_gate=True)
    limits = CheckLimits(per_minute=6000, burst=1000, concurrency=10, timeout=60.0, cache_ttl=600.0, cache_size=2)
    async with serve_api(resolver, limits) as api:
        for domain in ("a.api.test", "b.api.test", "a.api.test", "c.api.test"):  # c evicts b, the least recent
            assert (await api.get(domain)).status_code == 200
        asked = {domain: resolver.asked_about(domain) for domain in ("a.api.test", "b.api.test", "c.api.test")}
        assert "age" in (await api.get("a.api.test")).headers and "age" in (await api.get("c.api.test")).headers
        assert "age" not in (await api.get("b.api.test")).headers
        assert resolver.asked_about("a.api.test") == asked["a.api.test"]
        assert resolver.asked_about("b.api.test") == 2 * asked["b.api.test"]


async def test_concurrent_requests_for_one_domain_share_one_check():
    resolver = GatedResolver()
    limits = CheckLimits(per_minute=1, burst=1, concurrency=1, timeout=60.0, cache_ttl=0.0, cache_size=0)
    async with serve_api(resolver, limits) as api:
        first = asyncio.create_task(api.get("shared.api.test"))
        await resolver.asked("shared.api.test")
        asked = resolver.asked_about("shared.api.test")
        before = checks_total("cached")
        others = [asyncio.create_task(api.get(name)) for name in ("shared.api.test", "SHARED.api.test.")]
        await eventually(lambda: api.service.callers("shared.api.test") == 3)  # all three wait on the one check
        assert api.service.running == 1
        resolver.gate.set()
        responses = [await task for task in (first, *others)]
        assert [r.status_code for r in responses] == [200, 200, 200]  # no 429: neither a slot nor a token needed
        assert len({r.text for r in responses}) == 1
        assert resolver.asked_about("shared.api.test") == asked  # one check's look-ups, not three
        assert checks_total("cached") - before == 2
        # with no cache, the next request is a new check, and the bucket (1 token) is now empty
        assert (await api.get("shared.api.test")).status_code == 429


async def test_a_check_past_its_deadline_is_a_504_and_frees_its_slot(caplog):
    resolver = GatedResolver()  # DNS never answers
    limits = CheckLimits(per_minute=6000, burst=1000, concurrency=1, timeout=0.2, cache_ttl=60.0, cache_size=100)
    async with serve_api(resolver, limits) as api:
        before = checks_total("timeout")
        response = await api.get("slow.api.test")
        assert response.status_code == 504 and response.headers["content-type"] == "application/json"
        assert response.json() == {
            "detail": "the check of slow.api.test did not finish within 0.2s (KUBEMTA_API_CHECK_TIMEOUT)"
        }
        assert checks_total("timeout") - before == 1
        assert api.service.running == 0 and resolver.cancelled > 0  # the look-ups were cancelled, the slot freed
        again = await api.get("slow.api.test")  # not cached, and the one slot is free: a new check, not a 429
        assert again.status_code == 504
        assert "Traceback" not in response.text and "Traceback" not in caplog.text


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_caller_that_goes_away_does_not_cancel_a_shared_check(concurrency):
    resolver = GatedResolver()
    limits = CheckLimits(per_minute=6000, burst=1000, concurrency=concurrency, timeout=60.0, cache_ttl=60.0)
    async with serve_api(resolver, limits) as api:
        impatient = asyncio.create_task(api.service.report("gone.api.test"))
        await resolver.asked("gone.api.test")
        patient = asyncio.create_task(api.service.report("gone.api.test"))
        await asyncio.sleep(0)
        impatient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        resolver.gate.set()
        async with asyncio.timeout(20):
            answer = await patient
        assert answer.report.domain == "gone.api.test" and resolver.cancelled == 0
        assert api.service.running == 0
