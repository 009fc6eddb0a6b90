"""The tracker's own metrics (the process, broker and event metrics come from kubemta_common.metrics)."""

from prometheus_client import Counter, Gauge

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
