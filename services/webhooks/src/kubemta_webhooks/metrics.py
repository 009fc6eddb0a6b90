"""The webhooks service's metrics (the process, broker and build metrics come from kubemta_common.metrics)."""

from prometheus_client import Counter, Gauge, Histogram

from kubemta_common.metrics import preinitialise

RESULTS: tuple[str, ...] = ("delivered", "retried", "failed", "expired", "gone")
"""delivered: 2xx; retried: queued for another attempt; failed: not retried (endpoint removed from the file);
expired: still failing after KUBEMTA_WEBHOOK_MAX_AGE; gone: the endpoint answered 410."""

DELIVERIES = Counter(
    "kubemta_webhook_deliveries_total",
    "Webhook POSTs by endpoint and result (delivered, retried, failed, expired, gone)",
    ["endpoint", "result"],
)
DELIVERY_SECONDS = Histogram(
    "kubemta_webhook_delivery_seconds",
    "Time of one webhook POST, answered or not",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENTS_MATCHED = Counter(
    "kubemta_webhook_events_matched_total", "Fate events read from the stream that matched at least one endpoint"
)
READER_LEADER = Gauge(
    "kubemta_webhook_reader_leader", "1 while this replica holds the leader lock and reads the stream"
)
READER_LAG = Gauge(
    "kubemta_webhook_reader_lag_seconds",
    "Age of the last stream record the reader handled when it handled it (0 when the reader is idle at the tail)",
)


def preinitialise_endpoints(names: list[str]) -> None:
    """Create every result series of these endpoints at 0."""
    preinitialise(DELIVERIES, endpoint=names, result=RESULTS)
