"""Metrics helpers shared by the services (each service defines its own metrics)."""

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge

BROKER_CONNECTED = Gauge(
    "kubemta_broker_connected", "1 while the service is connected to RabbitMQ, else 0", ["service"]
)
BUILD_INFO = Gauge("kubemta_build_info", "kubemta build information; value is always 1", ["version", "service"])


def record_build_info(service: str) -> None:
    """Set kubemta_build_info{version,service} to 1."""
    try:
        current = version("kubemta-common")
    except PackageNotFoundError:
        current = "unknown"
    BUILD_INFO.labels(version=current, service=service).set(1)


def preinitialise(counter: Counter, **label_values: Iterable[str]) -> None:
    """Create every combination of known label values so the series exist at 0."""
    names = list(label_values)
    combos: list[dict[str, str]] = [{}]
    for name in names:
        combos = [{**combo, name: value} for combo in combos for value in label_values[name]]
    for combo in combos:
        counter.labels(**combo)


EVENTS_PUBLISHED = Counter(
    "kubemta_events_published_total", "Lifecycle events the `events` stream confirmed (events/emitter.py)"
)
EVENTS_DROPPED = Counter(
    "kubemta_events_dropped_total",
    "Lifecycle events dropped unpublished: the buffer was full while the stream did not take them, or the "
    "service stopped first",
)
EVENTS_BUFFERED = Gauge("kubemta_events_buffered", "Lifecycle events waiting to be published to the stream")
DUPLICATE_CHECKS = Counter(
    "kubemta_duplicate_checks_total",
    "Duplicate checks asked of the tracker (events/tracker_client.py), by check (received, delivered, queued, "
    "routed, fate) and result (found, absent, unknown: the tracker could not tell and the mail went on)",
    ["check", "result"],
)
preinitialise(
    DUPLICATE_CHECKS,
    check=("received", "delivered", "queued", "routed", "fate"),
    result=("found", "absent", "unknown"),
)
DUPLICATES = Counter(
    "kubemta_duplicates_total",
    "Work recognised as already done and not done again, by stage: ingress (a client's retry of a message already "
    "queued, answered with the first queue id), delivery-worker (recipients of a redelivered job already "
    "delivered), queue-manager, dns-resolver (a redelivered input already handled)",
    ["stage"],
)
"""One counter for every service (a test run imports them all into one process); each service pre-initialises
its own stage."""
