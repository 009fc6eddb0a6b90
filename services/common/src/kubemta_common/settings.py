"""Settings every service shares; each service extends `ServiceSettings` with its own.

All values come from `KUBEMTA_*` environment variables (and files in the mounted
secrets directory), validated at start-up.
"""

import socket
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SecretsSettingsSource, SettingsConfigDict

from kubemta_common.amqp.streams import DEFAULT_SUPPRESSION_TTL
from kubemta_common.config_types import Duration, DurationList, Listen, parse_listen
from kubemta_common.errors import ConfigError
from kubemta_common.events.log_kinds import ALL, logged_kinds

SECRETS_DIR = Path("/run/secrets/kubemta")
BROKER_MAX_MESSAGE_SIZE_DEFAULT = 16 * 1024 * 1024
"""RabbitMQ 4.x's default `max_message_size` (3.x: 128 MiB); the smaller one, so a 3.x default is safe too."""
CONSUMER_MEMORY_DESCRIPTION = (
    "Bytes of large bus messages a service's consumers may hold: the prefetch of the large lanes (messages over "
    "256 KiB) is set so that this many bytes of KUBEMTA_MAX_MESSAGE_SIZE messages fit, and running handlers hold at "
    "most half of it (the delivery-worker's default is 96 MiB)"
)
BUS_HEADROOM = 1024 * 1024
"""Bytes a bus message may carry beyond the accepted message itself: kubemta's Received: and
DKIM-Signature: headers, the envelope (up to KUBEMTA_MAX_RECIPIENTS addresses) and, in a
delivery result, one diagnostic per recipient."""


def _event_kinds(value: str) -> str:
    logged_kinds(value)  # a ValueError naming an unknown kind
    return value


LogEvents = Annotated[str, AfterValidator(_event_kinds)]
"""KUBEMTA_LOG_EVENTS: `all`, `none` or kinds of lifecycle events (events/log_kinds.py)."""


class ServiceSettings(BaseSettings):
    """Configuration common to the four services."""

    model_config = SettingsConfigDict(
        env_prefix="KUBEMTA_",
        env_nested_delimiter="__",
        secrets_dir=SECRETS_DIR if SECRETS_DIR.is_dir() else None,
        extra="ignore",
    )

    amqp_url: SecretStr = Field(
        default=SecretStr("amqp://guest:guest@127.0.0.1:5672/"), description="RabbitMQ URL (amqp:// or amqps://)"
    )
    hostname: str = Field(default_factory=socket.getfqdn, description="This MTA's host name (HELO, Received, DSNs)")
    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9100"), description="host:port for /metrics, /healthz, /readyz"
    )
    log_format: str = Field(default="json", pattern="^(json|text)$", description="json or text")
    log_level: str = Field(default="INFO", description="Python log level")
    log_events: LogEvents = Field(
        default=ALL,
        description=(
            "Lifecycle events also written as log lines: all, none, or a comma-separated list of kinds (received, "
            "delivered, bounced, ...); every event still goes to the events stream and the tracker"
        ),
    )
    event_loop: str = Field(
        default="uvloop", pattern="^(uvloop|asyncio)$", description="Event loop: uvloop (faster) or asyncio"
    )
    amqp_prefetch: int = Field(default=32, ge=1, le=10000, description="Unacknowledged messages per consumer")
    consumer_batch_window: Duration = Field(
        default=0.02,
        ge=0,
        le=1.0,
        description=(
            "How long a consumer holds a delivery so that those arriving together are handled in one loop turn "
            "(outputs in one write, one multiple ack); ends early when the prefetch is full; 0 turns it off"
        ),
    )
    publish_timeout: Duration = Field(default=10.0, gt=0, description="How long to wait for a publisher confirm")
    amqp_reconnect_interval: Duration = Field(default=2.0, gt=0, description="Pause between broker reconnects")
    broker_stuck_after: Duration = Field(
        default=300.0,
        ge=0,
        description=(
            "After this long without a broker connection the service opens one of its own; when the broker takes it, "
            "its own connection is stuck and the service stops (exit status 1) to be started again; 0: never "
            "(amqp/stuck_connection.py)"
        ),
    )
    retry_schedule: DurationList = Field(
        default=[300.0, 600.0, 1200.0, 2400.0, 3600.0],
        min_length=1,
        description="Delays between delivery attempts; the last one repeats (every service declares their queues)",
    )
    drain_seconds: Duration = Field(default=30.0, ge=0, description="Grace period for in-flight work on SIGTERM")
    max_message_size: int = Field(
        default=10240000,
        gt=0,
        description=(
            "Largest message accepted, in bytes (the ingress refuses larger ones; the other services size their "
            "consumers by it)"
        ),
    )
    consumer_memory: int = Field(
        default=32 * 1024 * 1024,
        ge=1024 * 1024,
        description=CONSUMER_MEMORY_DESCRIPTION,
    )
    broker_max_message_size: int = Field(
        default=BROKER_MAX_MESSAGE_SIZE_DEFAULT,
        ge=1024 * 1024,
        le=512 * 1024 * 1024,
        description=(
            "The broker's max_message_size in bytes (RabbitMQ 4.x: 16777216, 3.x: 134217728); larger bus messages "
            "are refused before they are sent"
        ),
    )

    events_max_age: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        description="How long the `events` stream keeps lifecycle events (message tracking looks back this far)",
    )
    events_max_bytes: int = Field(
        default=10 * 1024**3, ge=64 * 1024 * 1024, description="Most bytes the `events` stream keeps (per replica)"
    )
    decisions_max_age: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        description=(
            "How long the `decisions` stream keeps operators' delete/hold/release rules (at least the queue "
            "lifetime, so a rule outlives the mail it names)"
        ),
    )
    suppression_ttl: Duration = Field(
        default=DEFAULT_SUPPRESSION_TTL,
        gt=0,
        description=(
            "How long a recipient that hard-bounced as invalid stays suppressed, the longest TTL of an operator's "
            "entry, and the age limit of the `suppressions` stream (every service declares it with this value)"
        ),
    )
    events_buffer: int = Field(
        default=10000,
        ge=100,
        description=(
            "Lifecycle events a service keeps in memory while the `events` stream does not take them; beyond "
            "this the oldest are dropped (kubemta_events_dropped_total), mail flow never waits"
        ),
    )
    events_confirm_timeout: Duration = Field(
        default=1.0,
        gt=0,
        description=(
            "Longest wait for the stream to confirm an event that guards against duplicates (received, attempt, "
            "queued, routed); on timeout the mail goes on and the event is published later"
        ),
    )
    tracker_url: str = Field(
        default="",
        description=(
            "Base URL of the tracker API (e.g. http://kubemta-tracker:8025), asked whether a client's retry or a "
            "redelivered job was already done; empty: no duplicate checks"
        ),
    )
    tracker_token: SecretStr = Field(default=SecretStr(""), description="Read token for the tracker API")
    tracker_timeout: Duration = Field(
        default=2.0, gt=0, description="Longest wait for a tracker duplicate check; on timeout the mail goes on"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Files in the secrets directory count under both names: `kubemta_relayhost_password`, as
        pydantic-settings reads them, and `relayhost_password`, as the README documents and the chart mounts
        them (the prefixed name wins when both exist)."""
        unprefixed = SecretsSettingsSource(
            settings_cls, secrets_dir=settings_cls.model_config.get("secrets_dir"), env_prefix=""
        )
        return init_settings, env_settings, dotenv_settings, file_secret_settings, unprefixed

    @classmethod
    def load(cls) -> Self:
        """Read and validate the environment, raising ConfigError with every problem listed."""
        try:
            return cls()
        except ValidationError as exc:
            problems = "; ".join(
                f"KUBEMTA_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"invalid configuration: {problems}") from None
