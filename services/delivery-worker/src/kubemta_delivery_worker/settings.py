"""Configuration of the delivery-worker (`KUBEMTA_*` environment variables).

The SMTP timeouts follow RFC 5321 §4.5.3.2: the client waits at least 5 minutes for
the replies to MAIL and RCPT and at least 10 minutes for the reply to the final dot.
"""

import ipaddress
import re
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from kubemta_common.amqp.topology import DELIVERY_LIMIT
from kubemta_common.config_types import Duration, Listen, format_duration, parse_listen
from kubemta_common.settings import CONSUMER_MEMORY_DESCRIPTION, ServiceSettings

# RFC 5321 §4.5.3.2.2 / §4.5.3.2.3: MAIL and RCPT replies, 5 minutes.
COMMAND_TIMEOUT_DEFAULT = 300.0
# RFC 5321 §4.5.3.2.6: the reply to the final "." may take 10 minutes.
DATA_TIMEOUT_DEFAULT = 600.0
# Postfix smtp_connect_timeout.
CONNECT_TIMEOUT_DEFAULT = 30.0
# The deadline of one delivery attempt (attempt_limits.py): one normal slow transaction
# (RFC 5321's 10 minutes for the reply to the final dot, plus connect and commands) fits,
# and with the slot wait it stays far below RabbitMQ's consumer_timeout (30 min default).
ATTEMPT_DEADLINE_DEFAULT = 900.0
CONSUMER_TIMEOUT_DEFAULT = 1800.0
# Attempt deadline + slot wait must not exceed this (5 minutes of margin below the consumer timeout).
ATTEMPT_BUDGET_MAX = CONSUMER_TIMEOUT_DEFAULT - 300.0
# Postfix smtp_mx_address_limit and smtp_mx_session_limit (0 = no limit).
MX_ADDRESS_LIMIT_DEFAULT = 5
MX_SESSION_LIMIT_DEFAULT = 2
# RFC 1035 §2.3.1 / RFC 1123 §2.1: letters, digits, hyphens; labels of 1-63 octets, 253 in all.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class WorkerSettings(ServiceSettings):
    """Settings of the delivery-worker; `hostname` is the name it sends in EHLO."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9104"), description="host:port for /metrics, /healthz, /readyz"
    )
    consumer_memory: int = Field(
        default=96 * 1024 * 1024,
        ge=1024 * 1024,
        description=CONSUMER_MEMORY_DESCRIPTION,
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
    delivery_attempt_deadline: Duration = Field(
        default=ATTEMPT_DEADLINE_DEFAULT,
        gt=0,
        description=(
            "Longest delivery attempt of one job over all its hosts (after its destination slot); every SMTP/LMTP "
            "timeout is cut to the time left, unanswered recipients are then deferred. Keep it well below "
            "RabbitMQ's consumer_timeout (30m by default): with KUBEMTA_DESTINATION_WAIT at most 25m"
        ),
    )
    smtp_mx_address_limit: int = Field(
        default=MX_ADDRESS_LIMIT_DEFAULT,
        ge=0,
        description="Route addresses tried per delivery attempt, in order (Postfix smtp_mx_address_limit; 0: all)",
    )
    smtp_mx_session_limit: int = Field(
        default=MX_SESSION_LIMIT_DEFAULT,
        ge=0,
        description=(
            "Hosts per delivery attempt whose session got the server's greeting (Postfix smtp_mx_session_limit; "
            "hosts failing before the greeting do not count; 0: no limit)"
        ),
    )
    delivery_journal: str = Field(
        default="",
        description=(
            "File where the worker notes each delivered recipient the moment the remote server's reply arrives "
            "(journal.py), read when a job comes back after a crash; in the chart /tmp/kubemta-delivered.journal "
            "(an emptyDir the restarted container keeps); empty = none"
        ),
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

    @field_validator("delivery_attempt_deadline")
    @classmethod
    def _check_deadline(cls, value: float, info: ValidationInfo) -> float:
        connect = info.data.get("smtp_connect_timeout")
        if isinstance(connect, int | float) and value <= connect:
            raise ValueError(
                f"{format_duration(value)} leaves no time to try a host: "
                f"it must be longer than KUBEMTA_SMTP_CONNECT_TIMEOUT ({format_duration(connect)})"
            )
        wait = info.data.get("destination_wait")
        if isinstance(wait, int | float) and value + wait > ATTEMPT_BUDGET_MAX:
            raise ValueError(
                f"{format_duration(value)} plus KUBEMTA_DESTINATION_WAIT ({format_duration(wait)}) exceeds "
                f"{format_duration(ATTEMPT_BUDGET_MAX)}: a job must be done well before RabbitMQ's consumer_timeout "
                f"({format_duration(CONSUMER_TIMEOUT_DEFAULT)} by default) closes the worker's channel"
            )
        return value

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
