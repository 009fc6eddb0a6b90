"""Kubernetes ServiceAccount tokens as credentials: TokenReview answers, cached, mapped to sender identities.

Apps in the cluster prove who they are with their projected ServiceAccount token, bound to
the audience `KUBEMTA_SERVICEACCOUNT_AUDIENCE`: as the HTTP API's bearer token (api_auth.py)
or as the SMTP AUTH PLAIN password (auth.py). `ServiceAccountVerifier` is the `TokenVerifier`
for both:

1. a cheap look first: a token that is not JWT-shaped or longer than 8 KiB
   (jwt_shape.py) is refused without asking anyone;
2. the cache, keyed by the token's SHA-256 (the token itself is never kept): an account
   the API authenticated is trusted until the token's own `exp` (read unverified) or
   `tokenreview_cache_ttl`, whichever comes first; a refused token is refused again for
   `tokenreview_negative_ttl`; at most `tokenreview_cache_size` answers, least recently
   used go first. Concurrent checks of one token wait for the same review (single flight);
3. the review (tokenreview.py), when the cache has no answer;
4. the identities file (serviceaccount_identities.py), consulted on every check so an edit
   takes effect at once: an account the API authenticated but the file does not list is
   refused, and logged once per account.

When the API cannot answer (down, slow, 5xx) the token is refused but not remembered,
a warning is logged and `kubemta_tokenreviews_total{result="error"}` counts it; SMTP
answers such a check `454 4.7.0` (`check` tells it apart), the API 401. A principal is
`Principal(kind="serviceaccount", name="system:serviceaccount:NS:NAME", identities=...)`.
"""

import asyncio
import enum
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from kubemta_common.metrics import preinitialise
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_ingress.api_auth import Principal
from kubemta_ingress.jwt_shape import jwt_shaped, unverified_expiry
from kubemta_ingress.serviceaccount_identities import ServiceAccount, ServiceAccountIdentitiesFile
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity

logger = logging.getLogger(__name__)

KIND = "serviceaccount"
MAX_REPORTED_UNMAPPED = 10_000
"""Accounts remembered as already reported unlisted; the memory is cleared when it is full."""

TOKENREVIEWS = Counter(
    "kubemta_tokenreviews_total",
    "TokenReview requests for ServiceAccount tokens, by result",
    ["result"],  # authenticated, refused, unmapped (authenticated, not in the identities file), error (no answer)
)
preinitialise(TOKENREVIEWS, result=["authenticated", "refused", "unmapped", "error"])
TOKENREVIEW_CACHE = Counter(
    "kubemta_tokenreview_cache_total",
    "ServiceAccount token checks answered from the TokenReview cache (hit) or not (miss)",
    ["result"],
)
preinitialise(TOKENREVIEW_CACHE, result=["hit", "miss"])


class TokenReviewUnavailable(Exception):
    """No answer about the token: the API could not be asked, or did not answer in time or in form."""


class Reviewer(Protocol):
    """Asks whom a token belongs to (tokenreview.TokenReviewClient; a fake in unit tests)."""

    async def review(self, token: str) -> ServiceAccount | None:
        """The account `token` authenticates; None when refused; raises TokenReviewUnavailable without an answer."""
        ...

    async def close(self) -> None:
        """Release the reviewer's threads and connections."""
        ...


class IdentitySource(Protocol):
    """The identities of an account (serviceaccount_identities.ServiceAccountIdentitiesFile)."""

    def identities(self, account: ServiceAccount) -> tuple[Identity, ...] | None:
        """The identities `account` may send as; None when it is not listed."""
        ...


class Outcome(enum.Enum):
    """How a token check ended."""

    AUTHENTICATED = "authenticated"
    REFUSED = "refused"
    """Not a valid ServiceAccount token for our audience (or not even JWT-shaped)."""
    UNMAPPED = "unmapped"
    """A genuine token of an account the identities file does not list."""
    UNAVAILABLE = "unavailable"
    """The TokenReview API gave no answer: try again later."""


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one token check, and the principal when it is AUTHENTICATED."""

    outcome: Outcome
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class _Review:
    """A review's answer as the cache keeps it (`unavailable`: no answer, never cached)."""

    account: ServiceAccount | None
    unavailable: bool = False


class ServiceAccountVerifier:
    """`TokenVerifier` for ServiceAccount tokens: a cached, single-flight TokenReview, then the identities file."""

    def __init__(
        self,
        reviewer: Reviewer,
        identities: IdentitySource,
        *,
        cache_ttl: float,
        negative_ttl: float,
        cache_size: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._reviewer = reviewer
        self._identities = identities
        self._cache_ttl = cache_ttl
        self._negative_ttl = negative_ttl
        self._cache = TtlLruCache[bytes, _Review](cache_size, clock=clock)
        self._wall_clock = wall_clock
        self._in_flight: dict[bytes, asyncio.Task[_Review]] = {}
        self._reported_unmapped: set[ServiceAccount] = set()

    def listed(self, account: ServiceAccount) -> bool:
        """True when the identities file lists `account` (by name or by its namespace)."""
        return self._identities.identities(account) is not None

    async def verify(self, token: str) -> Principal | None:
        """The principal `token` authenticates; None for any other outcome. Never raises for bad input."""
        return (await self.check(token)).principal

    async def check(self, token: str) -> Check:
        """The outcome of checking `token`, with the principal when it is authenticated and listed."""
        if not jwt_shaped(token):
            return Check(Outcome.REFUSED)
        key = hashlib.sha256(token.encode("ascii")).digest()
        review = self._cache.get(key)
        if review is not None:
            TOKENREVIEW_CACHE.labels(result="hit").inc()
        else:
            TOKENREVIEW_CACHE.labels(result="miss").inc()
            task = self._in_flight.get(key)
            if task is None:
                task = asyncio.create_task(self._review(key, token))
                self._in_flight[key] = task
                task.add_done_callback(lambda _: self._in_flight.pop(key, None))
            review = await asyncio.shield(task)  # one caller giving up does not cancel the others' review
        if review.unavailable:
            return Check(Outcome.UNAVAILABLE)
        account = review.account
        if account is None:
            return Check(Outcome.REFUSED)
        identities = self._identities.identities(account)
        if identities is None:
            self._report_unmapped(account)
            return Check(Outcome.UNMAPPED)
        self._reported_unmapped.discard(account)
        return Check(Outcome.AUTHENTICATED, Principal(kind=KIND, name=account.username, identities=identities))

    async def _review(self, key: bytes, token: str) -> _Review:
        try:
            account = await self._reviewer.review(token)
        except TokenReviewUnavailable as exc:
            TOKENREVIEWS.labels(result="error").inc()
            logger.warning("TokenReview failed, a ServiceAccount token is refused for now: %s", exc)
            return _Review(None, unavailable=True)
        review = _Review(account)
        if account is None:
            TOKENREVIEWS.labels(result="refused").inc()
            self._cache.put(key, review, self._negative_ttl)
            return review
        listed = self._identities.identities(account) is not None
        TOKENREVIEWS.labels(result="authenticated" if listed else "unmapped").inc()
        self._cache.put(key, review, self._positive_ttl(token))
        return review

    def _positive_ttl(self, token: str) -> float:
        expiry = unverified_expiry(token)
        if expiry is None:
            return self._cache_ttl
        return min(self._cache_ttl, expiry - self._wall_clock())

    def _report_unmapped(self, account: ServiceAccount) -> None:
        if account in self._reported_unmapped:
            return
        if len(self._reported_unmapped) >= MAX_REPORTED_UNMAPPED:
            self._reported_unmapped.clear()
        self._reported_unmapped.add(account)
        logger.warning(
            "ServiceAccount %s presented a valid token but is not in the ServiceAccount identities file: refused",
            account,
        )

    async def close(self) -> None:
        """Stop reviews in flight and release the reviewer."""
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        await self._reviewer.close()


def build_serviceaccount_verifier(settings: IngressSettings) -> ServiceAccountVerifier | None:
    """The verifier of ServiceAccount tokens; None when `KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE` is not set.

    Raises ConfigError when the identities file, kubemta's own token or the CA file is missing or
    malformed, or KUBEMTA_KUBERNETES_API_URL is not an https://HOST[:PORT] address.
    """
    if settings.serviceaccount_identities_file is None:
        return None
    # The Kubernetes client is imported only here: an ingress without ServiceAccount identities (the default) starts
    # without it (about 0.1 s of CPU at every start).
    from kubemta_ingress.tokenreview import TokenReviewClient, kubernetes_configuration

    identities = ServiceAccountIdentitiesFile(settings.serviceaccount_identities_file)
    configuration = kubernetes_configuration(
        api_url=settings.kubernetes_api_url,
        token_file=settings.kubernetes_token_file,
        ca_file=settings.kubernetes_ca_file,
        environ=dict(os.environ),
    )
    client = TokenReviewClient(
        configuration, audience=settings.serviceaccount_audience, timeout=settings.tokenreview_timeout
    )
    return ServiceAccountVerifier(
        client,
        identities,
        cache_ttl=settings.tokenreview_cache_ttl,
        negative_ttl=settings.tokenreview_negative_ttl,
        cache_size=settings.tokenreview_cache_size,
    )
