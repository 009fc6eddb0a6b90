"""The sender's pure parts: which retry tier an attempt waits in."""

from kubemta_webhooks.queues import retry_queue
from kubemta_webhooks.sender import retry_delay
from kubemta_webhooks.settings import WEBHOOK_RETRY_TIERS


def test_tiers_then_the_last_repeats() -> None:
    tiers = tuple(WEBHOOK_RETRY_TIERS)
    assert [retry_queue(retry_delay(tiers, attempt)) for attempt in range(1, 9)] == [
        "webhooks.retry.10s",
        "webhooks.retry.1m",
        "webhooks.retry.5m",
        "webhooks.retry.30m",
        "webhooks.retry.2h",
        "webhooks.retry.6h",
        "webhooks.retry.6h",
        "webhooks.retry.6h",
    ]
    assert retry_delay(tiers, 0) == 10.0
