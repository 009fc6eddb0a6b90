"""Configuration of the queue-manager: the shared settings plus queue lifetime and delay warnings.

Defaults follow Postfix: `maximal_queue_lifetime` 5d, `delay_warning_time` 4h (but
turned on; 0 turns warnings off). The retry schedule and the host name are inherited.
DKIM signing is on when `KUBEMTA_DKIM_KEYS_DIR` names the mounted key Secret.
"""

from pathlib import Path

from pydantic import Field

from kubemta_common.config_types import Duration, Listen, parse_listen
from kubemta_common.routing_settings import RouteShortcutSettings
from kubemta_common.settings import ServiceSettings


class QueueManagerSettings(ServiceSettings, RouteShortcutSettings):
    """`KUBEMTA_*` settings of the queue-manager."""

    metrics_listen: Listen = Field(
        default=parse_listen("127.0.0.1:9102"), description="host:port for /metrics, /healthz, /readyz"
    )
    max_queue_lifetime: Duration = Field(
        default=5 * 86400.0,
        gt=0,
        description="Age after which a still-deferred recipient is bounced as expired (Postfix maximal_queue_lifetime)",
    )
    delay_warning_after: Duration = Field(
        default=4 * 3600.0,
        ge=0,
        description="Age after which the sender is warned once that delivery is delayed; 0 turns warnings off",
    )
    dsn_batch_window: Duration = Field(
        default=10.0,
        gt=0,
        description=(
            "DSN requests of one message and event (failed, delayed) arriving within this time of the first are "
            "sent as one DSN, whatever the number of destination domains"
        ),
    )
    dsn_batch_limit: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="DSN requests held at once (the dsn consumer's prefetch); reaching it sends the oldest group",
    )
    dsn_return_size_limit: int = Field(
        default=50000,
        ge=0,
        description=(
            "Largest message (bytes) a failure DSN returns whole when the sender asked for RET=FULL (RFC 3461 §4.3);"
            " a larger one gets its headers only (Postfix bounce_size_limit)"
        ),
    )
    dkim_keys_dir: Path | None = Field(
        default=None,
        description="Directory of DKIM private keys, DOMAIN/SELECTOR.key (a mounted Secret); unset: no signing",
    )
