"""The dns-resolver's Prometheus metrics (names and labels fixed by ARCHITECTURE.md and STYLE.md)."""

from collections.abc import Sequence
from typing import cast

from prometheus_client import REGISTRY, Counter

from kubemta_common.metrics import preinitialise

LOOKUP_RESULTS: tuple[str, ...] = ("ok", "nxdomain", "nodata", "servfail", "timeout")
ROUTE_SOURCES: tuple[str, ...] = ("transport", "relayhost", "mx", "implicit-mx")
ROUTE_RESULTS: tuple[str, ...] = ("ok", "temporary", "permanent")

DNS_LOOKUPS = Counter(
    "kubemta_dns_lookups",
    "DNS queries sent, by result (servfail includes REFUSED and other server failures)",
    ["result"],
)
DNS_CACHE_HITS = Counter("kubemta_dns_cache_hits", "Route look-ups answered from the cache")
DNS_CACHE_MISSES = Counter("kubemta_dns_cache_misses", "Route look-ups that needed DNS queries")
ROUTES = Counter(
    "kubemta_routes",
    "Jobs routed, by what produced the route and the result (ok, temporary or permanent failure)",
    ["source", "result"],
)

preinitialise(DNS_LOOKUPS, result=LOOKUP_RESULTS)
preinitialise(ROUTES, source=ROUTE_SOURCES, result=ROUTE_RESULTS)


def shared_counter(name: str, documentation: str, labels: Sequence[str]) -> Counter:
    """A counter several services define (kubemta_duplicates_total): the one already registered in this process
    when there is one (a test run imports every service), else a new one. (Its home should be kubemta_common.)"""
    existing = REGISTRY._names_to_collectors.get(name)  # no public look-up by name
    if existing is not None:
        return cast(Counter, existing)
    return Counter(name, documentation, labels)


DUPLICATES = shared_counter(
    "kubemta_duplicates_total",
    "Work recognised as already done and not done again, by stage: ingress (a client's retry of a message "
    "already queued, answered with the first queue id), delivery-worker (recipients of a redelivered job already "
    "delivered), queue-manager, dns-resolver (a redelivered input already handled)",
    ["stage"],
)
preinitialise(DUPLICATES, stage=["dns-resolver"])
