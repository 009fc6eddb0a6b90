"""Routing: a destination domain -> a Route (hosts to try, in order) or a RouteFailure.

Order (Postfix): a `KUBEMTA_TRANSPORTS` entry for the domain (or a `.parent` entry),
then `KUBEMTA_RELAYHOST`, then DNS (MX, implicit MX). DNS results are cached per next
hop for their TTL (capped); exchangers of equal preference are shuffled afresh every
time a route is built (RFC 5321 §5.1), cached or not. Concurrent jobs for the same
next hop share one look-up.

Route answers (kubemta_common.route_answers): every route built is offered to the answer log (when one is
given) with how long it stays what the router would build again without asking anyone: the remaining
cache life of the DNS answers behind it (MX or implicit MX, or a next hop's addresses), at most its TLS
policy's (route_tls), and `static_answer_ttl` (KUBEMTA_ROUTE_ANSWER_TTL) for a static route. Incomplete
destinations (a look-up failed temporarily) and failures are never offered.
"""

import asyncio
import ipaddress
import random
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from kubemta.v1 import message_pb2
from kubemta_common.logs import outside_message
from kubemta_common.providers import provider_for_hosts
from kubemta_common.route_order import shuffle_equal_preferences
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
type Found = tuple[message_pb2.Route | RouteFailure, float]
"""A route (or failure) and the seconds it stays fresh (0: not to be shared)."""
DEFAULT_STATIC_ANSWER_TTL = 60.0


class AnswerSink(Protocol):
    """Where built routes go to be shared (kubemta_common.route_answer_log.RouteAnswerLog)."""

    def offer(self, domain: str, route: message_pb2.Route, fresh_for: float) -> None: ...


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
        answers: AnswerSink | None = None,
        static_answer_ttl: float = DEFAULT_STATIC_ANSWER_TTL,
    ) -> None:
        self._lookup = lookup
        self._tls = tls
        self._transports = transports
        self._relayhost = relayhost
        self._delivery_port = delivery_port
        self._cache = cache
        self._policy = policy
        self._rng = rng or random.Random()
        self._answers = answers
        self._static_ttl = static_answer_ttl
        self._in_flight: dict[CacheKey, asyncio.Task[Destination | Failure]] = {}

    async def route(self, domain: str) -> message_pb2.Route | RouteFailure:
        """The route for mail to `domain`, with its TLS policy (route_tls)."""
        name = normalize_domain(domain)
        result, fresh_for = await self._find_route(name)
        if isinstance(result, RouteFailure):
            return result
        if self._tls is not None:
            refusal = await self._tls.apply(name, result)
            if refusal is not None:  # RFC 8461 §5.1: no MX host satisfies an enforced MTA-STS policy
                return RouteFailure(True, refusal.status, refusal.diagnostic, cast(Source, result.source))
            fresh_for = min(fresh_for, self._tls.fresh_for(name, result))
        if self._answers is not None and fresh_for > 0:
            self._answers.offer(name, result, fresh_for)
        return result

    async def _find_route(self, name: str) -> Found:
        """The route for mail to the normalized domain `name` (hosts only), and how long it is fresh."""
        transport = self._transports.lookup(name)
        if transport is not None:
            if transport.nexthop.unix_socket:  # lmtp:unix:/path
                return unix_socket_route(transport.nexthop), self._static_ttl
            route, fresh_for = await self._route_nexthop(transport.nexthop, "transport")
            if isinstance(route, message_pb2.Route):
                route.kind = transport_kind(transport)
            return route, fresh_for
        if self._relayhost is not None:
            return await self._route_nexthop(self._relayhost, "relayhost")
        literal = _address_literal(name)
        if literal is not None:  # RFC 5321 §5.1: an address literal is connected to directly
            destination = Destination((Exchange(literal, 0, (literal,)),), True, 0.0)
            return self._build(destination, self._delivery_port, "mx"), self._static_ttl
        result, fresh_for = await self._resolve((name, "domain"))
        source: Source = "implicit-mx" if result.implicit else "mx"
        if isinstance(result, Failure):
            return RouteFailure(result.temporary, result.status, result.diagnostic, source), 0.0
        return self._build(result, self._delivery_port, source), fresh_for if result.complete else 0.0

    async def _route_nexthop(self, nexthop: Nexthop, source: Source) -> Found:
        port = nexthop.port or self._delivery_port
        if nexthop.is_address:
            destination = Destination((Exchange(nexthop.host, 0, (nexthop.host,)),), False, 0.0)
            return self._build(destination, port, source), self._static_ttl
        result, fresh_for = await self._resolve((nexthop.host, "nexthop-mx" if nexthop.mx_lookup else "nexthop-host"))
        if isinstance(result, Failure):
            diagnostic = f"{source} {nexthop}: {result.diagnostic}"
            return RouteFailure(result.temporary, result.status, diagnostic, source), 0.0
        return self._build(result, port, source), min(fresh_for, self._static_ttl) if result.complete else 0.0

    async def _resolve(self, key: CacheKey) -> tuple[Destination | Failure, float]:
        """The look-up's result (cached, shared or fresh) and the seconds it stays cached."""
        cached = self._cache.get_with_ttl(key)
        if cached is not None:
            DNS_CACHE_HITS.inc()
            return cached
        DNS_CACHE_MISSES.inc()
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._look_up(key), context=outside_message())  # later jobs await it too
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        result = await asyncio.shield(task)
        return result, self._policy.ttl(result)

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
        hosts = (
            message_pb2.RouteHost(
                hostname=exchange.hostname, address=address, port=port, preference=exchange.preference
            )
            for exchange in destination.exchanges
            for address in exchange.addresses
        )
        return message_pb2.Route(
            kind=message_pb2.TRANSPORT_KIND_SMTP,
            hosts=shuffle_equal_preferences(hosts, self._rng),  # RFC 5321 §5.1: random order among equal preferences
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
