"""The webhooks service's configuration (`KUBEMTA_*`), validated at start-up."""

from pathlib import Path

from pydantic import Field

from kubemta_common.config_types import Duration, DurationList, Listen, parse_listen
from kubemta_common.settings import ServiceSettings

WEBHOOK_RETRY_TIERS = [10.0, 60.0, 300.0, 1800.0, 7200.0, 21600.0]
"""10s, 1m, 5m, 30m, 2h, 6h; the last repeats."""


class WebhooksSettings(ServiceSettings):
    """Configuration of the webhooks service."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9106"), description="host:port for /metrics, /healthz, /readyz"
    )
    webhooks_file: Path | None = Field(
        default=None,
        description=(
            "JSON file of the webhook endpoints (name, url, secret, submitters, events, tags; docs/webhooks.md), "
            "re-read when it changes (the last good content is kept); unset: nothing is sent"
        ),
    )
    webhooks_reload_interval: Duration = Field(
        default=5.0, gt=0, description="How often the endpoints file is checked for changes"
    )
    webhook_retry_tiers: DurationList = Field(
        default=WEBHOOK_RETRY_TIERS,
        min_length=1,
        description="Delays between the attempts of a failed webhook (one queue each); the last one repeats",
    )
    webhook_max_age: Duration = Field(
        default=86400.0, gt=0, description="A webhook still failing this long after it was queued is dropped"
    )
    webhook_timeout: Duration = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Connect and read timeout of one POST (the whole request gets at most three times this)",
    )
    webhook_prefetch: int = Field(
        default=16, ge=1, le=1000, description="Webhooks one replica sends at once (the consumer's prefetch)"
    )
    webhook_leader_retry: Duration = Field(
        default=3.0,
        gt=0,
        description="How often a replica that is not the stream reader tries to become it (leader lock)",
    )
    webhook_checkpoint_interval: Duration = Field(
        default=2.0,
        gt=0,
        description=(
            "Longest time the reader's checkpoint trails the stream when no webhook was queued (one is written "
            "after every batch that queued webhooks)"
        ),
    )
