"""Prometheus metrics of the delivery-worker, pre-initialised so every series exists at 0."""

from prometheus_client import Counter, Histogram

from kubemta_common.metrics import preinitialise

ATTEMPT_RESULTS: tuple[str, ...] = ("delivered", "deferred", "bounced")
CONNECTION_RESULTS: tuple[str, ...] = ("ok", "refused", "timeout", "tls_failed", "error")

DELIVERY_ATTEMPTS = Counter(
    "kubemta_delivery_attempts_total",
    "Delivery attempts per recipient, by result",
    ["result"],
)
DELIVERY_DURATION = Histogram(
    "kubemta_delivery_duration_seconds",
    "Duration of one delivery attempt of a job, over all the hosts tried",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0),
)
SMTP_CONNECTIONS = Counter(
    "kubemta_smtp_connections_total",
    "Outgoing SMTP connections, by how the connection set-up ended",
    ["result"],
)

preinitialise(DELIVERY_ATTEMPTS, result=ATTEMPT_RESULTS)
preinitialise(SMTP_CONNECTIONS, result=CONNECTION_RESULTS)
