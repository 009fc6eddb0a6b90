"""The dns-resolver's Prometheus metrics (names and labels fixed by ARCHITECTURE.md and STYLE.md)."""

from prometheus_client import Counter

from kubemta_common.metrics import DUPLICATES, preinitialise

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


preinitialise(DUPLICATES, stage=["dns-resolver"])
