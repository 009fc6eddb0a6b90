"""The tracker's own metrics (the process, broker and event metrics come from kubemta_common.metrics)."""

from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from kubemta_common.amqp.streams import DECISIONS, EVENTS, SUPPRESSIONS

INDEXED_RECORDS = Counter(
    "kubemta_tracker_indexed_records_total", "Stream records (event batches, decisions) indexed", ["stream"]
)
STREAM_OFFSET = Gauge("kubemta_tracker_stream_offset", "Offset of the last stream record indexed", ["stream"])
BARRIER_SYNCS = Counter(
    "kubemta_tracker_barrier_syncs_total", "Barrier syncs of duplicate checks by result", ["result"]
)
REFUSED_REQUESTS = Counter(
    "kubemta_tracker_refused_requests_total",
    "API requests refused before routing: body too large (413) or too slow to arrive (408)",
    ["reason"],
)
IDEMPOTENCY_CLAIMS = Counter(
    "kubemta_tracker_idempotency_claims_total",
    "Idempotency-Key claims answered, by answer (unknown: the index did not catch up in time, 503)",
    ["state"],
)


class OptionalGauge(Collector):
    """A gauge without labels that is absent until set (and after `clear`): a plain Gauge starts at 0, which for
    a timestamp reads as 1970 and wins every `min()` across replicas."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self.value: float | None = None
        if registry is not None:
            registry.register(self)

    def set(self, value: float) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation)
        if self.value is not None:
            family.add_metric([], self.value)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation)


OLDEST_OPEN_MESSAGE = OptionalGauge(
    "kubemta_tracker_oldest_open_message_timestamp_seconds",
    "Arrival time (Unix seconds) of the oldest message still open in this replica's index (not yet queued, or "
    "with a job not delivered, bounced, expired or deleted; held counts); the time of the computation when none "
    "is, absent until the index caught up with the stream (oldest_open.py)",
)

for _stream in (EVENTS, DECISIONS, SUPPRESSIONS):
    INDEXED_RECORDS.labels(stream=_stream)
SUPPRESSION_CHANGES = Counter(
    "kubemta_tracker_suppression_changes_total",
    "Operators' suppression list changes by action (add, remove) and result (applied; unconfirmed: the stream "
    "did not confirm, 503; unsynced: confirmed but not indexed here in time, 503)",
    ["action", "result"],
)
SUPPRESSION_CHECKS = Counter(
    "kubemta_tracker_suppression_checks_total", "Addresses asked by POST /v1/suppressions/check, by answer", ["result"]
)

for _result in ("synced", "timeout"):
    BARRIER_SYNCS.labels(result=_result)
for _reason in ("too_large", "too_slow"):
    REFUSED_REQUESTS.labels(reason=_reason)
for _state in ("done", "claimed", "in_progress", "unknown"):
    IDEMPOTENCY_CLAIMS.labels(state=_state)
for _action in ("add", "remove"):
    for _result in ("applied", "unconfirmed", "unsynced"):
        SUPPRESSION_CHANGES.labels(action=_action, result=_result)
for _result in ("suppressed", "not_suppressed"):
    SUPPRESSION_CHECKS.labels(result=_result)
