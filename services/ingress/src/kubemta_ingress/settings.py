"""The ingress' configuration (`KUBEMTA_*`), validated at start-up.

Limits follow Postfix' defaults: `message_size_limit` (10240000 bytes),
`smtpd_recipient_limit` (1000) and `smtpd_timeout` (300s).
"""

import ipaddress

from pydantic import Field, field_validator

from kubemta_common.config_types import CommaList, Duration, Listen, NetworkList, parse_listen
from kubemta_common.settings import ServiceSettings
from kubemta_ingress.policy import normalize_domain


class IngressSettings(ServiceSettings):
    """Configuration of the ingress service."""

    smtp_listen: Listen = Field(
        default=parse_listen("127.0.0.1:2525"), description="host:port of the MX/relay SMTP listener; empty = off"
    )
    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9101"), description="host:port for /metrics, /healthz, /readyz"
    )
    local_domains: CommaList = Field(
        default_factory=list, description="Domains accepted from any client (final destinations)"
    )
    relay_networks: NetworkList = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")],
        description="Client networks allowed to relay to any domain (CIDR list)",
    )
    max_message_size: int = Field(default=10240000, gt=0, description="Largest message accepted, in bytes")
    max_recipients: int = Field(default=1000, ge=1, description="Most recipients accepted per message")
    smtp_timeout: Duration = Field(default=300.0, gt=0, description="Idle time after which a session is closed")

    @field_validator("local_domains")
    @classmethod
    def _normalize_domains(cls, value: list[str]) -> list[str]:
        return [normalize_domain(domain) for domain in value]
