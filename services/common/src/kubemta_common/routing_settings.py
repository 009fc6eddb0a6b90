"""Settings two services share: the name servers they ask, the static routes (KUBEMTA_TRANSPORTS) and the route
shortcut (KUBEMTA_ROUTE_SHORTCUT).

The dns-resolver routes mail by both; the ingress asks DNS for the domain check and for LMTP
hosts, and reads the transports to verify recipients of local domains at RCPT. Each service's
settings model inherits the mixins it needs, so the variables mean the same everywhere. Each
value is parsed once, by its validator, into the type the services use: a bad value stops
the service at start-up with a message naming the variable.
"""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, PlainValidator
from pydantic_settings import NoDecode

from kubemta_common.config_types import Duration, parse_nameserver, split_list
from kubemta_common.transport_map import TransportMap, parse_transports


def _to_nameservers(value: Any) -> Any:
    items = split_list(value)
    if isinstance(items, list):
        return [parse_nameserver(item) if isinstance(item, str) else item for item in items]
    return items


def _to_transport_map(value: Any) -> TransportMap:
    if isinstance(value, TransportMap):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected domain=smtp:nexthop;... text, got {type(value).__name__}")
    return parse_transports(value)


NameserverList = Annotated[list[tuple[str, int]], NoDecode, BeforeValidator(_to_nameservers)]
"""Name servers written as `host:port,...` (port 53 when omitted), parsed to (IP address, port)."""

TransportMapSetting = Annotated[TransportMap, NoDecode, PlainValidator(_to_transport_map)]
"""`KUBEMTA_TRANSPORTS` text, parsed to a TransportMap."""


class DnsClientSettings(BaseModel):
    """`KUBEMTA_DNS_NAMESERVERS` and `KUBEMTA_DNS_TIMEOUT`."""

    dns_nameservers: NameserverList = Field(
        default_factory=list, description="Name servers as host:port,...; empty = the system's /etc/resolv.conf"
    )
    """The configured name servers as (address, port); empty for the system's."""
    dns_timeout: Duration = Field(default=10.0, gt=0, description="Time limit of one DNS lookup")


class TransportSettings(BaseModel):
    """`KUBEMTA_TRANSPORTS`."""

    transports: TransportMapSetting = Field(
        default="",
        validate_default=True,
        description=(
            "Static routes: domain=smtp:[host]:port;.sub.domain=smtp:host:port;local.domain=lmtp:[host]:24 or "
            "lmtp:unix:/path (LMTP: A/AAAA only, default port 24); the ingress asks the LMTP server of a local "
            "domain at RCPT whether a recipient exists"
        ),
    )
    """The parsed `KUBEMTA_TRANSPORTS`."""


class RouteShortcutSettings(BaseModel):
    """`KUBEMTA_ROUTE_SHORTCUT` and `KUBEMTA_ROUTE_ANSWERS_SIZE`: the ingress and the queue-manager both send
    first-attempt jobs straight to `deliver` with the dns-resolver's fresh route answer
    (kubemta_common.route_shortcut)."""

    route_shortcut: bool = Field(
        default=True,
        description=(
            "Send a message's first-attempt jobs straight to deliver while the dns-resolver's route answer for the"
            " domain (the routes stream) is fresh: from the ingress for a message of one job that the queue-manager"
            " would not DKIM-sign, else from the queue-manager; off: every job goes through the queue-manager and"
            " the resolver"
        ),
    )
    route_answers_size: int = Field(
        default=100_000,
        ge=1,
        description="Domains whose route answers the ingress and the queue-manager keep (LRU)",
    )
