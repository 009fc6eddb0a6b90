"""The dns-resolver's configuration (`KUBEMTA_*`), validated at start-up.

Transports, relay host and name servers are checked here, so a typo stops the
service with a message naming the variable instead of failing the first job.
"""

from pathlib import Path

from pydantic import Field, field_validator

from kubemta_common.config_types import Duration, Listen, parse_listen, parse_nameserver
from kubemta_common.routing_settings import DnsClientSettings, TransportSettings
from kubemta_common.settings import ServiceSettings
from kubemta_common.transport_map import Nexthop, parse_relayhost
from kubemta_dns_resolver.tls_policy import TlsPolicyMap, parse_tls_policy

__all__ = ["ResolverSettings", "parse_nameserver"]  # parse_nameserver moved to kubemta_common.config_types


class ResolverSettings(ServiceSettings, DnsClientSettings, TransportSettings):
    """Configuration of the dns-resolver service."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9103"), description="host:port for /metrics, /healthz, /readyz"
    )
    relayhost: str = Field(default="", description="Send all other mail via [host]:port or host[:port]")
    delivery_port: int = Field(default=25, ge=1, le=65535, description="TCP port of MX hosts")
    dns_cache_size: int = Field(default=10000, ge=0, description="Routes kept in the cache (0 disables it)")
    dns_negative_ttl: Duration = Field(
        default=60.0, ge=0, description="Longest time an NXDOMAIN, null MX or no-address answer is cached"
    )
    dns_max_ttl: Duration = Field(default=86400.0, ge=0, description="Longest time any answer is cached")
    tls_policy: str = Field(
        default="", description="TLS levels per destination: domain=none|may|encrypt|verify;.parent=...;*=default"
    )
    mta_sts: bool = Field(default=True, description="Apply MTA-STS policies (RFC 8461) of recipient domains")
    mta_sts_port: int = Field(default=443, ge=1, le=65535, description="HTTPS port of MTA-STS policy hosts")
    mta_sts_ca_file: str = Field(default="", description="CA bundle for MTA-STS policy hosts; empty = the system's")
    mta_sts_timeout: Duration = Field(default=10.0, gt=0, description="Time limit of one MTA-STS policy fetch")
    mta_sts_cache_size: int = Field(default=10000, ge=0, description="MTA-STS policies kept in the cache")

    @field_validator("tls_policy")
    @classmethod
    def _check_tls_policy(cls, value: str) -> str:
        parse_tls_policy(value)
        return value

    @field_validator("mta_sts_ca_file")
    @classmethod
    def _check_ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"CA file {value!r} does not exist")
        return value

    @field_validator("relayhost")
    @classmethod
    def _check_relayhost(cls, value: str) -> str:
        parse_relayhost(value)
        return value

    def relay_nexthop(self) -> Nexthop | None:
        """The parsed `KUBEMTA_RELAYHOST`, or None."""
        return parse_relayhost(self.relayhost)

    def tls_policy_map(self) -> TlsPolicyMap:
        """The parsed `KUBEMTA_TLS_POLICY`."""
        return parse_tls_policy(self.tls_policy)
