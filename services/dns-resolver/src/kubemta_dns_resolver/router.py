"""Routing: a destination domain -> a Route (hosts to try, in order) or a RouteFailure.

Order (Postfix): a `KUBEMTA_TRANSPORTS` entry for the domain (or a `.parent` entry),
then `KUBEMTA_RELAYHOST`, then DNS (MX, implicit MX). DNS results are cached per next
hop for their TTL (capped); exchangers of equal preference are shuffled afresh every
time a route is built (RFC 5321 §5.1), cached or not. Concurrent jobs for the same
next hop share one look-up.
"""

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from typing import Literal, cast

from kubemta.v1 import message_pb2
from kubemta_common.logs import outside_message
from kubemta_common.providers import provider_for_hosts
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.lookup import DnsLookup
from kubemta_dns_resolver.metrics import DNS_CACHE_HITS, DNS_CACHE_MISSES
from kubemta_dns_resolver.mx import STATUS_NO_ROUTE, Destination, Exchange, Failure, resolve_domain, resolve_host
from kubemta_dns_resolver.route_tls import RouteTlsPolicy
from kubemta_dns_resolver.transports import (
    Nexthop,
    TransportMap,
    normalize_domain,
    transport_kind,
    unix_socket_route,
)

Source = Literal["transport", "relayhost", "mx", "implicit-mx"]
LookupKind = Literal["domain", "nexthop-mx", "nexthop-host"]
CacheKey = tuple[str, LookupKind]
type RouteCache = TtlLruCache[CacheKey, Destination | Failure]


@dataclass(frozen=True, slots=True)
class RouteFailure:
    """No route: deliver nothing; report this to the queue-manager for every recipient."""

    temporary: bool
    status: str
    diagnostic: str
    source: Source


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How long results stay cached, in seconds."""

    max_ttl: float = 86400.0
    negative_ttl: float = 60.0

    def ttl(self, result: Destination | Failure) -> float:
        """The caching time of a result: 0 (not cached) for temporary failures."""
        if isinstance(result, Failure):
            return 0.0 if result.temporary else min(result.ttl, self.negative_ttl, self.max_ttl)
        if not result.complete:  # some look-up failed temporarily: keep it only briefly
            return min(result.ttl, self.negative_ttl, self.max_ttl)
        return min(result.ttl, self.max_ttl)


class Router:
    """Finds the route for a domain."""

    def __init__(
        self,
        lookup: DnsLookup,
        *,
        transports: TransportMap,
        relayhost: Nexthop | None,
        delivery_port: int,
        cache: RouteCache,
        policy: CachePolicy,
        rng: random.Random | None = None,
        tls: RouteTlsPolicy | None = None,
    ) -> None:
        self._lookup = lookup
        self._tls = tls
        self._transports = transports
        self._relayhost = relayhost
        self._delivery_port = delivery_port
        self._cache = cache
        self._policy = policy
        self._rng = rng or random.Random()
        self._in_flight: dict[CacheKey, asyncio.Task[Destination | Failure]] = {}

    async def route(self, domain: str) -> message_pb2.Route | RouteFailure:
        """The route for mail to `domain`, with its TLS policy (route_tls)."""
        result = await self._find_route(domain)
        if self._tls is None or isinstance(result, RouteFailure):
            return result
        refusal = await self._tls.apply(normalize_domain(domain), result)
        if refusal is not None:  # RFC 8461 §5.1: no MX host satisfies an enforced MTA-STS policy
            return RouteFailure(True, refusal.status, refusal.diagnostic, cast(Source, result.source))
        return result

    async def _find_route(self, domain: str) -> message_pb2.Route | RouteFailure:
        """The route for mail to `domain` (hosts only)."""
        name = normalize_domain(domain)
        transport = self._transports.lookup(name)
        if transport is not None:
            if transport.nexthop.unix_socket:  # lmtp:unix:/path
                return unix_socket_route(transport.nexthop)
            route = await self._route_nexthop(transport.nexthop, "transport")
            if isinstance(route, message_pb2.Route):
                route.kind = transport_kind(transport)
            return route
        if self._relayhost is not None:
            return await self._route_nexthop(self._relayhost, "relayhost")
        literal = _address_literal(name)
        if literal is not None:  # RFC 5321 §5.1: an address literal is connected to directly
            return self._build(Destination((Exchange(literal, 0, (literal,)),), True, 0.0), self._delivery_port, "mx")
        result = await self._resolve((name, "domain"))
        source: Source = "implicit-mx" if result.implicit else "mx"
        if isinstance(result, Failure):
            return RouteFailure(result.temporary, result.status, result.diagnostic, source)
        return self._build(result, self._delivery_port, source)

    async def _route_nexthop(self, nexthop: Nexthop, source: Source) -> message_pb2.Route | RouteFailure:
        port = nexthop.port or self._delivery_port
        if nexthop.is_address:
            return self._build(Destination((Exchange(nexthop.host, 0, (nexthop.host,)),), False, 0.0), port, source)
        result = await self._resolve((nexthop.host, "nexthop-mx" if nexthop.mx_lookup else "nexthop-host"))
        if isinstance(result, Failure):
            return RouteFailure(result.temporary, result.status, f"{source} {nexthop}: {result.diagnostic}", source)
        return self._build(result, port, source)

    async def _resolve(self, key: CacheKey) -> Destination | Failure:
        cached = self._cache.get(key)
        if cached is not None:
            DNS_CACHE_HITS.inc()
            return cached
        DNS_CACHE_MISSES.inc()
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._look_up(key), context=outside_message())  # later jobs await it too
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(task)

    async def _look_up(self, key: CacheKey) -> Destination | Failure:
        name, kind = key
        if kind == "domain":
            result = await resolve_domain(self._lookup, name)
        elif kind == "nexthop-mx":
            # A configured next hop that does not exist is "unable to route", not a bad recipient domain.
            result = await resolve_domain(self._lookup, name, nxdomain_status=STATUS_NO_ROUTE)
        else:
            result = await resolve_host(self._lookup, name)
        self._cache.put(key, result, self._policy.ttl(result))
        return result

    def _build(self, destination: Destination, port: int, source: Source) -> message_pb2.Route:
        by_preference: dict[int, list[Exchange]] = {}
        for exchange in destination.exchanges:
            by_preference.setdefault(exchange.preference, []).append(exchange)
        hosts: list[message_pb2.RouteHost] = []
        for preference in sorted(by_preference):
            group = by_preference[preference]
            self._rng.shuffle(group)  # RFC 5321 §5.1: random order among equal preferences
            hosts.extend(
                message_pb2.RouteHost(hostname=exchange.hostname, address=address, port=port, preference=preference)
                for exchange in group
                for address in exchange.addresses
            )
        return message_pb2.Route(
            kind=message_pb2.TRANSPORT_KIND_SMTP,
            hosts=hosts,
            provider=provider_for_hosts([exchange.hostname for exchange in destination.exchanges]),
            source=source,
        )


def _address_literal(domain: str) -> str | None:
    """The IP address of a domain literal such as `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    text = domain[1:-1]
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
