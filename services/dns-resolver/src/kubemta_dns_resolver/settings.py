"""The dns-resolver's configuration (`KUBEMTA_*`), validated at start-up.

Transports, relay host, TLS policy and name servers are parsed here, once, into the
objects the router uses, so a typo stops the service with a message naming the variable
instead of failing the first job.
"""

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, field_validator
from pydantic_settings import NoDecode

from kubemta_common.config_types import Duration, Listen, parse_listen, parse_nameserver
from kubemta_common.routing_settings import DnsClientSettings, TransportSettings
from kubemta_common.settings import ServiceSettings
from kubemta_common.transport_map import Nexthop, parse_relayhost
from kubemta_dns_resolver.tls_policy import TlsPolicyMap, parse_tls_policy

__all__ = ["ResolverSettings", "parse_nameserver"]  # parse_nameserver moved to kubemta_common.config_types


def _text(value: Any, syntax: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {syntax} text, got {type(value).__name__}")
    return value


def _to_relayhost(value: Any) -> Nexthop | None:
    if value is None or isinstance(value, Nexthop):
        return value
    return parse_relayhost(_text(value, "[host]:port or host[:port]"))


def _to_tls_policy(value: Any) -> TlsPolicyMap:
    if isinstance(value, TlsPolicyMap):
        return value
    return parse_tls_policy(_text(value, "domain=level;..."))


RelayhostSetting = Annotated[Nexthop | None, NoDecode, PlainValidator(_to_relayhost)]
"""`KUBEMTA_RELAYHOST` text, parsed to its next hop (None when empty)."""

TlsPolicySetting = Annotated[TlsPolicyMap, NoDecode, PlainValidator(_to_tls_policy)]
"""`KUBEMTA_TLS_POLICY` text, parsed to a TlsPolicyMap."""


class ResolverSettings(ServiceSettings, DnsClientSettings, TransportSettings):
    """Configuration of the dns-resolver service."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9103"), description="host:port for /metrics, /healthz, /readyz"
    )
    relayhost: RelayhostSetting = Field(
        default="", validate_default=True, description="Send all other mail via [host]:port or host[:port]"
    )
    """The parsed `KUBEMTA_RELAYHOST`, or None."""
    delivery_port: int = Field(default=25, ge=1, le=65535, description="TCP port of MX hosts")
    dns_cache_size: int = Field(default=10000, ge=0, description="Routes kept in the cache (0 disables it)")
    dns_negative_ttl: Duration = Field(
        default=60.0, ge=0, description="Longest time an NXDOMAIN, null MX or no-address answer is cached"
    )
    dns_max_ttl: Duration = Field(default=86400.0, ge=0, description="Longest time any answer is cached")
    tls_policy: TlsPolicySetting = Field(
        default="",
        validate_default=True,
        description="TLS levels per destination: domain=none|may|encrypt|verify;.parent=...;*=default",
    )
    """The parsed `KUBEMTA_TLS_POLICY`."""
    mta_sts: bool = Field(default=True, description="Apply MTA-STS policies (RFC 8461) of recipient domains")
    mta_sts_port: int = Field(default=443, ge=1, le=65535, description="HTTPS port of MTA-STS policy hosts")
    mta_sts_ca_file: str = Field(default="", description="CA bundle for MTA-STS policy hosts; empty = the system's")
    mta_sts_timeout: Duration = Field(default=10.0, gt=0, description="Time limit of one MTA-STS policy fetch")
    mta_sts_cache_size: int = Field(default=10000, ge=0, description="MTA-STS policies kept in the cache")
    route_answer_ttl: Duration = Field(
        default=60.0,
        ge=0,
        description=(
            "How long a static route (transport, relayhost, address literal) shared on the routes stream stays fresh"
            " for queue-managers; 0 shares none"
        ),
    )

    @field_validator("mta_sts_ca_file")
    @classmethod
    def _check_ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"CA file {value!r} does not exist")
        return value
