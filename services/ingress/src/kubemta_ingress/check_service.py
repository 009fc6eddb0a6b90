"""The HTTP API's domain checks, made affordable: cached, shared, limited and bounded in time.

`CheckService.report(domain)` answers, in this order:
1. an invalid name -> InvalidDomainError (nothing looked up, no budget spent);
2. a report cached for this normalised domain within `KUBEMTA_API_CACHE_TTL` -> that report;
3. a check of this domain already running -> its report, shared (single flight);
4. otherwise a new check, if a slot is free (`KUBEMTA_API_MAX_CONCURRENT_CHECKS`, else Busy)
   and the token bucket has a token (`KUBEMTA_API_CHECKS_PER_MINUTE`/`_BURST`, else
   RateLimited). Only this step costs DNS look-ups and rate budget.
A check runs as its own task with a deadline (`KUBEMTA_API_CHECK_TIMEOUT`): past it the
check and its DNS look-ups are cancelled, its slot freed, and every caller waiting on it gets CheckTimeout (the
API's 504); a caller that goes away does not cancel a check others share. A finished
report is cached, including one whose checks are `unknown` (a slow or failing DNS is then
asked again only after the TTL).
"""

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from kubemta_ingress.api_limits import CheckSlots, Clock, TokenBucket
from kubemta_ingress.report_cache import ReportCache
from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.domain_check import CheckConfig, DomainReport, Resolver, check_domain, normalize_domain
from kubemta_mail_auth.domain_check.dns_queries import Answer as DnsAnswer
from kubemta_mail_auth.domain_check.dns_queries import RecordType

logger = logging.getLogger(__name__)

BUSY_RETRY_AFTER = 1.0
"""Seconds a caller refused for want of a free slot is told to wait: most checks take well under a second."""


@dataclass(frozen=True, slots=True)
class CheckLimits:
    """The API's limits on domain checks (the `KUBEMTA_API_*` settings)."""

    per_minute: float = 30.0
    burst: int = 10
    concurrency: int = 4
    timeout: float = 30.0
    cache_ttl: float = 60.0
    cache_size: int = 1000

    @classmethod
    def from_settings(cls, settings: IngressSettings) -> "CheckLimits":
        return cls(
            per_minute=settings.api_checks_per_minute,
            burst=settings.api_check_burst,
            concurrency=settings.api_max_concurrent_checks,
            timeout=settings.api_check_timeout,
            cache_ttl=settings.api_cache_ttl,
            cache_size=settings.api_cache_size,
        )


class CheckTimeout(Exception):
    """The check of `domain` did not finish within `timeout` seconds."""

    def __init__(self, domain: str, timeout: float) -> None:
        super().__init__(f"the check of {domain} did not finish within {timeout:g}s (KUBEMTA_API_CHECK_TIMEOUT)")
        self.domain = domain
        self.timeout = timeout


class Source(StrEnum):
    """Where an answer came from."""

    CHECKED = "checked"  # a new check, for this caller
    SHARED = "shared"  # a check another caller had started
    CACHED = "cached"  # the cache


@dataclass(frozen=True, slots=True)
class Answer:
    """A report, where it came from and its age in seconds (0 unless cached)."""

    report: DomainReport
    source: Source
    age: float = 0.0


class CheckService:
    """Domain checks for the API: see the module docstring for the order of the answers."""

    def __init__(
        self, config: CheckConfig, resolver: Resolver, limits: CheckLimits, clock: Clock = time.monotonic
    ) -> None:
        self._config = config
        self._resolver = resolver
        self._timeout = limits.timeout
        self._cache = ReportCache(limits.cache_size, limits.cache_ttl, clock)
        self._bucket = TokenBucket(limits.per_minute, limits.burst, clock)
        self._slots = CheckSlots(limits.concurrency, BUSY_RETRY_AFTER)
        self._flights: dict[str, asyncio.Task[DomainReport]] = {}
        self._callers: Counter[str] = Counter()

    @property
    def running(self) -> int:
        """Checks running now."""
        return self._slots.in_use

    def callers(self, domain: str) -> int:
        """Callers waiting now for the check of `domain` (normalised), the one that started it included."""
        return self._callers[normalize_domain(domain)]

    async def report(self, domain: str) -> Answer:
        """The report on `domain`; InvalidDomainError, Busy, RateLimited or CheckTimeout otherwise."""
        name = normalize_domain(domain)
        cached = self._cache.get(name)
        if cached is not None:
            return Answer(cached.report, Source.CACHED, cached.age)
        flight = self._flights.get(name)
        source = Source.SHARED
        if flight is None:
            flight = self._start(name)
            source = Source.CHECKED
        self._callers[name] += 1
        try:
            return Answer(await asyncio.shield(flight), source)
        finally:
            self._callers[name] -= 1
            if not self._callers[name]:
                del self._callers[name]

    def _start(self, name: str) -> asyncio.Task[DomainReport]:
        self._slots.acquire()
        try:
            self._bucket.take()
        except BaseException:
            self._slots.release()
            raise
        flight = asyncio.create_task(self._check(name), name=f"domain check {name}")
        flight.add_done_callback(_retrieve)
        self._flights[name] = flight
        return flight

    async def _check(self, name: str) -> DomainReport:
        resolver = _ScopedResolver(self._resolver)
        try:
            async with asyncio.timeout(self._timeout):
                report = await check_domain(name, self._config, resolver)
        except TimeoutError:
            raise CheckTimeout(name, self._timeout) from None
        finally:
            resolver.cancel()
            self._slots.release()
            del self._flights[name]
        self._cache.put(name, report)
        return report


class _ScopedResolver:
    """The look-ups of one check, as tasks that `cancel()` ends: the domain check's MemoResolver shields its
    queries, so cancelling the check alone would leave them running until each one's DNS timeout."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._queries: set[asyncio.Future[DnsAnswer]] = set()

    async def query(self, name: str, rdtype: RecordType) -> DnsAnswer:
        query = asyncio.ensure_future(self._resolver.query(name, rdtype))
        self._queries.add(query)
        query.add_done_callback(self._queries.discard)
        return await query

    def cancel(self) -> None:
        for query in list(self._queries):
            query.cancel()


def _retrieve(task: asyncio.Task[DomainReport]) -> None:
    """Mark a flight's exception as seen (its callers, if any are left, get it through their shield)."""
    if not task.cancelled():
        task.exception()
