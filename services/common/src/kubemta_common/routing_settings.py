"""Settings two services share: the name servers they ask and the static routes (KUBEMTA_TRANSPORTS).

The dns-resolver routes mail by both; the ingress asks DNS for the domain check and for LMTP
hosts, and reads the transports to verify recipients of local domains at RCPT. Each service's
settings model inherits the mixins it needs, so the variables mean the same everywhere and are
validated once.
"""

from pydantic import BaseModel, Field, field_validator

from kubemta_common.config_types import CommaList, Duration, parse_nameserver
from kubemta_common.transport_map import TransportMap, parse_transports


class DnsClientSettings(BaseModel):
    """`KUBEMTA_DNS_NAMESERVERS` and `KUBEMTA_DNS_TIMEOUT`."""

    dns_nameservers: CommaList = Field(
        default_factory=list, description="Name servers as host:port,...; empty = the system's /etc/resolv.conf"
    )
    dns_timeout: Duration = Field(default=10.0, gt=0, description="Time limit of one DNS lookup")

    @field_validator("dns_nameservers")
    @classmethod
    def _check_nameservers(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_nameserver(item)
        return value

    def nameservers(self) -> list[tuple[str, int]]:
        """The configured name servers as (address, port); empty for the system's."""
        return [parse_nameserver(item) for item in self.dns_nameservers]


class TransportSettings(BaseModel):
    """`KUBEMTA_TRANSPORTS`."""

    transports: str = Field(
        default="",
        description=(
            "Static routes: domain=smtp:[host]:port;.sub.domain=smtp:host:port;local.domain=lmtp:[host]:24 or "
            "lmtp:unix:/path (LMTP: A/AAAA only, default port 24); the ingress asks the LMTP server of a local "
            "domain at RCPT whether a recipient exists"
        ),
    )

    @field_validator("transports")
    @classmethod
    def _check_transports(cls, value: str) -> str:
        parse_transports(value)
        return value

    def transport_map(self) -> TransportMap:
        """The parsed `KUBEMTA_TRANSPORTS`."""
        return parse_transports(self.transports)
