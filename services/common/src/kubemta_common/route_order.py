"""The order in which a route's hosts are tried: by preference, equal preferences in random order.

RFC 5321 §5.1: exchangers of equal preference are tried in random order, so the load spreads over
them. The order is drawn per job: the dns-resolver for each route it builds (cached or not), and the
queue-manager for each job it routes with the resolver's answer (kubemta_common.route_answers). The
addresses of one exchanger stay together and in their order; preferences are never mixed.
"""

import random
from collections.abc import Iterable, Sequence

from kubemta.v1 import message_pb2


def shuffle_equal_preferences(
    hosts: Iterable[message_pb2.RouteHost], rng: random.Random | None = None
) -> list[message_pb2.RouteHost]:
    """`hosts` by ascending preference, the exchangers (host names) of each preference shuffled with `rng`, each
    exchanger's addresses kept together in their order."""
    draw = rng or random
    by_preference: dict[int, dict[str, list[message_pb2.RouteHost]]] = {}
    for host in hosts:
        key = host.unix_socket or host.hostname or host.address
        by_preference.setdefault(host.preference, {}).setdefault(key, []).append(host)
    ordered: list[message_pb2.RouteHost] = []
    for preference in sorted(by_preference):
        groups: list[Sequence[message_pb2.RouteHost]] = list(by_preference[preference].values())
        draw.shuffle(groups)
        for group in groups:
            ordered.extend(group)
    return ordered


def reorder_route(route: message_pb2.Route, rng: random.Random | None = None) -> None:
    """Draw `route`'s host order afresh, in place (`shuffle_equal_preferences`)."""
    if len(route.hosts) < 2:
        return
    hosts = [message_pb2.RouteHost() for _ in route.hosts]
    for copy, host in zip(hosts, route.hosts, strict=True):
        copy.CopyFrom(host)
    ordered = shuffle_equal_preferences(hosts, rng)
    del route.hosts[:]
    route.hosts.extend(ordered)
