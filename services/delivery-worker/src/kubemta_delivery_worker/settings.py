"""Configuration of the delivery-worker (`KUBEMTA_*` environment variables).

The SMTP timeouts follow RFC 5321 §4.5.3.2: the client waits at least 5 minutes for
the replies to MAIL and RCPT and at least 10 minutes for the reply to the final dot.
"""

import ipaddress
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from kubemta_common.amqp.topology import DELIVERY_LIMIT
from kubemta_common.config_types import Duration, Listen, parse_listen
from kubemta_common.settings import ServiceSettings

# RFC 5321 §4.5.3.2.2 / §4.5.3.2.3: MAIL and RCPT replies, 5 minutes.
COMMAND_TIMEOUT_DEFAULT = 300.0
# RFC 5321 §4.5.3.2.6: the reply to the final "." may take 10 minutes.
DATA_TIMEOUT_DEFAULT = 600.0
# Postfix smtp_connect_timeout.
CONNECT_TIMEOUT_DEFAULT = 30.0
# RFC 1035 §2.3.1 / RFC 1123 §2.1: letters, digits, hyphens; labels of 1-63 octets, 253 in all.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class WorkerSettings(ServiceSettings):
    """Settings of the delivery-worker; `hostname` is the name it sends in EHLO."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9104"), description="host:port for /metrics, /healthz, /readyz"
    )
    smtp_connect_timeout: Duration = Field(
        default=CONNECT_TIMEOUT_DEFAULT, gt=0, description="TCP connect and server greeting timeout"
    )
    smtp_command_timeout: Duration = Field(
        default=COMMAND_TIMEOUT_DEFAULT, gt=0, description="Timeout for each SMTP command reply (EHLO, MAIL, RCPT...)"
    )
    smtp_data_timeout: Duration = Field(
        default=DATA_TIMEOUT_DEFAULT, gt=0, description="Timeout for the reply to the end of the message data"
    )
    smtp_pipelining: bool = Field(
        default=True,
        description="Send MAIL FROM, RCPT TO and DATA in one write to servers offering PIPELINING (RFC 2920)",
    )
    # Connection reuse, per-destination limits and poison jobs (pool.py, destinations.py, handler.py).
    connection_idle_seconds: Duration = Field(
        default=5.0, ge=0, description="How long an idle SMTP connection is kept for reuse (0: no reuse)"
    )
    connection_cache_per_host: int = Field(
        default=20,
        ge=0,
        description="Idle SMTP connections kept per host (as many as the destination concurrency: all can be reused)",
    )
    connection_cache_size: int = Field(default=64, ge=0, description="Idle SMTP connections kept in total")
    destination_concurrency: int = Field(
        default=20, ge=1, description="Simultaneous deliveries per destination (domain, or relayhost/transport host)"
    )
    destination_backoff: Duration = Field(
        default=60.0, ge=0, description="Pause for a destination after a 421 or 4.7.x rate-limit reply"
    )
    destination_wait: Duration = Field(
        default=60.0, gt=0, description="Longest wait for a destination slot before the job is deferred"
    )
    delivery_limit: int = Field(
        default=DELIVERY_LIMIT,
        ge=1,
        description="Redeliveries of a job that crashed the worker before it is moved to `held` (= the queue limit)",
    )
    # Outbound TLS and relayhost AUTH (tls_negotiation.py, relay_auth.py).
    tls_ca_file: str = Field(
        default="", description="CA bundle for verifying MX certificates (TLS policy verify, MTA-STS); empty = system's"
    )
    relayhost_username: str = Field(default="", description="User name for AUTH to KUBEMTA_RELAYHOST; empty = no AUTH")
    relayhost_password: SecretStr = Field(
        default=SecretStr(""), description="Password for AUTH to KUBEMTA_RELAYHOST (from the mounted Secret)"
    )
    relayhost_tls_unverified_name: str = Field(
        default="",
        description=(
            "The one relayhost host name to authenticate to WITHOUT verifying its certificate (an explicit opt-out "
            "for that exact name; empty = the password goes only over a verified certificate)"
        ),
    )

    @field_validator("relayhost_tls_unverified_name")
    @classmethod
    def _check_unverified_name(cls, value: str) -> str:
        name = value.strip().rstrip(".").lower()
        if name and not _is_host_name(name):
            raise ValueError(f"{value!r} is not one host name or IP address (no wildcards, lists or ports)")
        return name

    @field_validator("tls_ca_file")
    @classmethod
    def _check_ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError(f"CA file {value!r} does not exist")
        return value


def _is_host_name(name: str) -> bool:
    """True for one DNS host name (RFC 1123 §2.1) or one IP address."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))
