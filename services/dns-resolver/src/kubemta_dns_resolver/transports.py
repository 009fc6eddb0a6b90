"""Static routes as the dns-resolver uses them: the route kind of a transport and unix-socket routes.

Parsing `KUBEMTA_TRANSPORTS` and `KUBEMTA_RELAYHOST` lives in `kubemta_common.transport_map`
(the ingress reads the same map to verify local recipients); its names are re-exported
here for the resolver's modules.
"""

from kubemta.v1 import message_pb2
from kubemta_common.providers import provider_for_hosts
from kubemta_common.transport_map import (
    INET_PREFIX,
    LMTP_PORT,
    LMTP_SCHEME,
    SUPPORTED_SCHEMES,
    UNIX_PREFIX,
    Nexthop,
    Transport,
    TransportMap,
    normalize_domain,
    parse_lmtp_nexthop,
    parse_nexthop,
    parse_relayhost,
    parse_transport,
    parse_transports,
)

__all__ = [
    "INET_PREFIX",
    "LMTP_PORT",
    "LMTP_SCHEME",
    "SUPPORTED_SCHEMES",
    "UNIX_PREFIX",
    "Nexthop",
    "Transport",
    "TransportMap",
    "normalize_domain",
    "parse_lmtp_nexthop",
    "parse_nexthop",
    "parse_relayhost",
    "parse_transport",
    "parse_transports",
    "transport_kind",
    "unix_socket_route",
]


def transport_kind(transport: Transport) -> message_pb2.TransportKind.ValueType:
    """The route kind a transport delivers with."""
    return message_pb2.TRANSPORT_KIND_LMTP if transport.is_lmtp else message_pb2.TRANSPORT_KIND_SMTP


def unix_socket_route(nexthop: Nexthop) -> message_pb2.Route:
    """The route of an `lmtp:unix:/path` transport: that socket, no DNS."""
    return message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_LMTP,
        hosts=[message_pb2.RouteHost(unix_socket=nexthop.unix_socket)],
        provider=provider_for_hosts([]),
        source="transport",
    )
