"""Resolving a destination name to mail exchangers and their addresses (RFC 5321 §5.1).

- `resolve_domain`: MX records sorted by preference, each exchange resolved to A then
  AAAA addresses; no MX records -> the implicit MX (the name's own addresses); a null MX
  (RFC 7505) and NXDOMAIN are permanent failures; SERVFAIL and timeouts are temporary.
- `resolve_host`: a `[host]` next hop: its A/AAAA addresses only, no MX look-up.

The results keep exchanges of equal preference together in DNS order; the router
shuffles them each time it builds a route. The TTL of a result is the smallest TTL of
the records it was built from.
"""

import asyncio
from dataclasses import dataclass

from kubemta_dns_resolver.lookup import DnsLookup, LookupResult, LookupStatus

STATUS_TEMPORARY = "4.4.3"
"""RFC 3463 §3.5: directory server failure (DNS server failure or timeout)."""
STATUS_NOT_FOUND = "5.1.2"
"""RFC 3463 §3.2: bad destination system address (the domain does not exist)."""
STATUS_NULL_MX = "5.1.10"
"""RFC 7505 §4.2 (registered in RFC 7505 §5): the recipient domain has a null MX."""
STATUS_NO_ROUTE = "5.4.4"
"""RFC 3463 §3.5: unable to route (no address for the next hop)."""

NULL_MX_EXCHANGE = "."
"""RFC 7505 §3: a null MX is a single MX record with preference 0 and exchange "."."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """A mail exchanger with its addresses, A records first, then AAAA."""

    hostname: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Destination:
    """The exchangers of a destination, by preference (equal preferences in DNS order)."""

    exchanges: tuple[Exchange, ...]
    implicit: bool
    """True when the name had no MX records and its own addresses are used."""
    ttl: float
    complete: bool = True
    """False when some look-up failed temporarily, so an exchanger may be missing."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why no route could be found; `ttl` is how long a permanent failure stays true."""

    temporary: bool
    status: str
    diagnostic: str
    ttl: float = 0.0
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class _Addresses:
    addresses: tuple[str, ...]
    ttl: float
    temporary: bool
    nxdomain: bool
    detail: str


async def lookup_addresses(lookup: DnsLookup, name: str) -> _Addresses:
    """A then AAAA addresses of `name` (both queried at once)."""
    a, aaaa = await asyncio.gather(lookup.addresses(name, "A"), lookup.addresses(name, "AAAA"))
    found: list[LookupResult[str]] = [result for result in (a, aaaa) if result.status is LookupStatus.OK]
    details = "; ".join(result.detail for result in (a, aaaa) if result.detail)
    return _Addresses(
        addresses=a.records + aaaa.records,
        ttl=min(result.ttl for result in found or (a, aaaa)),  # found or both: never empty
        temporary=a.status.temporary or aaaa.status.temporary,
        nxdomain=LookupStatus.NXDOMAIN in (a.status, aaaa.status),
        detail=details,
    )


def _temporary(detail: str, implicit: bool = False) -> Failure:
    # no ttl: a temporary failure is never cached (router.CachePolicy)
    return Failure(
        True, STATUS_TEMPORARY, f"Host or domain name lookup failed temporarily ({detail})", implicit=implicit
    )


def _not_found(status: str, detail: str, ttl: float, implicit: bool = False) -> Failure:
    return Failure(False, status, f"Host or domain name not found ({detail})", ttl, implicit)


async def resolve_host(lookup: DnsLookup, name: str) -> Destination | Failure:
    """The addresses of one host (a `[host]` next hop): no MX look-up."""
    found = await lookup_addresses(lookup, name)
    if found.addresses:
        return Destination((Exchange(name, 0, found.addresses),), False, found.ttl, complete=not found.temporary)
    if found.temporary:
        return _temporary(found.detail)
    if found.nxdomain:
        return _not_found(STATUS_NO_ROUTE, found.detail, found.ttl)
    return Failure(False, STATUS_NO_ROUTE, f"unable to route: no address for {name}", found.ttl)


async def resolve_domain(
    lookup: DnsLookup, name: str, *, nxdomain_status: str = STATUS_NOT_FOUND
) -> Destination | Failure:
    """The mail exchangers of `name` (RFC 5321 §5.1), or why there are none."""
    mx = await lookup.mx(name)
    if mx.status.temporary:
        return _temporary(mx.detail)
    if mx.status is LookupStatus.NXDOMAIN:
        return _not_found(nxdomain_status, mx.detail, mx.ttl)
    if mx.status is LookupStatus.NODATA:
        return await _implicit_mx(lookup, name, mx.ttl, nxdomain_status)
    records = mx.records
    if len(records) == 1 and records[0].preference == 0 and records[0].exchange == NULL_MX_EXCHANGE:
        return Failure(False, STATUS_NULL_MX, "Recipient address has null MX", mx.ttl)
    preferences: dict[str, int] = {}
    for record in sorted(records, key=lambda record: record.preference):  # stable: DNS order among equals
        if record.exchange != NULL_MX_EXCHANGE:
            preferences.setdefault(record.exchange, record.preference)
    if not preferences:
        return Failure(False, STATUS_NO_ROUTE, "unable to route: no address for any MX host", mx.ttl)
    hosts = list(preferences)
    resolved = await asyncio.gather(*(lookup_addresses(lookup, host) for host in hosts))
    exchanges = tuple(
        Exchange(host, preferences[host], found.addresses)
        for host, found in zip(hosts, resolved, strict=True)
        if found.addresses
    )
    temporary = any(found.temporary for found in resolved)
    if exchanges:
        ttl = min([mx.ttl, *(found.ttl for found in resolved if found.addresses)])
        return Destination(exchanges, False, ttl, complete=not temporary)
    if temporary:
        details = "; ".join(found.detail for found in resolved if found.temporary)
        return _temporary(f"no address for any MX host: {details}")
    ttl = min([mx.ttl, *(found.ttl for found in resolved)])
    return Failure(False, STATUS_NO_ROUTE, "unable to route: no address for any MX host", ttl)


async def _implicit_mx(lookup: DnsLookup, name: str, mx_ttl: float, nxdomain_status: str) -> Destination | Failure:
    # RFC 5321 §5.1: without MX records the domain itself is the implicit MX, preference 0.
    found = await lookup_addresses(lookup, name)
    if found.addresses:
        ttl = min(mx_ttl, found.ttl)
        return Destination((Exchange(name, 0, found.addresses),), True, ttl, complete=not found.temporary)
    if found.temporary:
        return _temporary(found.detail, implicit=True)
    if found.nxdomain:
        return _not_found(nxdomain_status, found.detail, min(mx_ttl, found.ttl), implicit=True)
    return Failure(
        False, STATUS_NO_ROUTE, f"unable to route: {name} has no MX and no address", min(mx_ttl, found.ttl), True
    )
