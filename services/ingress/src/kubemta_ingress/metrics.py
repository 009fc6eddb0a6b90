"""The ingress' Prometheus metrics (names fixed by ARCHITECTURE.md and STYLE.md section 6)."""

import functools
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from kubemta_common.metrics import DUPLICATES, preinitialise

MESSAGES_RECEIVED = Counter(
    "kubemta_messages_received_total", "Messages accepted (SMTP and POST /v1/messages) and confirmed by the broker"
)
MESSAGES_REJECTED = Counter(
    "kubemta_messages_rejected_total", "Refused MAIL, RCPT and DATA commands, by reason", ["reason"]
)
API_MESSAGES = Counter(
    "kubemta_api_messages_total",
    "POST /v1/messages requests by result: queued, duplicate (a retry answered with the first queue id), replayed "
    "(a repeated Idempotency-Key), refused (a check failed), invalid (422/415), forbidden (no sender identities), "
    "conflict (Idempotency-Key in flight or reused), unavailable (tracker needed but unreachable)",
    ["result"],
)
API_RESULTS = ("queued", "duplicate", "replayed", "refused", "invalid", "forbidden", "conflict", "unavailable")
preinitialise(API_MESSAGES, result=list(API_RESULTS))
API_ACCEPT_DURATION = Histogram(
    "kubemta_api_accept_duration_seconds",
    "Time POST /v1/messages spends queueing a checked message (broker confirm included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SMTP_SESSIONS = Counter("kubemta_smtp_sessions_total", "SMTP connections accepted")
AUTH_ATTEMPTS = Counter(
    "kubemta_auth_attempts_total",
    "SMTP AUTH attempts, by result",
    ["result"],  # success, failure, locked
)
preinitialise(AUTH_ATTEMPTS, result=["success", "failure", "locked"])
SMTP_SESSIONS_ACTIVE = Gauge(
    "kubemta_smtp_sessions_active", "SMTP sessions admitted and still open, by listener", ["listener"]
)


@functools.cache
def sessions_active(listener: str) -> Gauge:
    """The `kubemta_smtp_sessions_active` gauge of one listener (looked up once, not on every connection)."""
    return SMTP_SESSIONS_ACTIVE.labels(listener=listener)


SMTP_CONNECTIONS_REFUSED = Counter(
    "kubemta_smtp_connections_refused_total",
    "SMTP connections closed before the greeting, by reason",
    ["reason"],  # max_connections, max_connections_per_ip, proxy_protocol
)
TLS_HANDSHAKES = Counter(
    "kubemta_tls_handshakes_total", "TLS handshakes (STARTTLS and implicit TLS), by result", ["result"]
)
TLS_CERTIFICATE_RELOADS = Counter(
    "kubemta_tls_certificate_reloads_total",
    "Certificate file changes picked up (loaded) or refused as broken (failed)",
    ["result"],
)
ACCEPT_DURATION = Histogram(
    "kubemta_smtp_accept_duration_seconds",
    "Time from the end of DATA to the reply (queueing and broker confirm included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
MESSAGE_SIZE = Histogram(
    "kubemta_message_size_bytes",
    "Size of accepted messages as received (before the trace header)",
    buckets=tuple(float(1024 * 4**power) for power in range(10)),  # 1 KiB .. 256 MiB
)
MESSAGE_DATA_IN_FLIGHT = Gauge(
    "kubemta_message_data_in_flight_bytes",
    "Message data the ingress holds now, received and not yet answered (KUBEMTA_MESSAGE_DATA_BUDGET bounds it)",
)
RECIPIENT_VERIFICATIONS = Counter(
    "kubemta_recipient_verifications_total",
    "Recipients of local domains checked at RCPT, by source and result",
    ["source", "result"],  # source: map, lmtp; result: known, unknown, tempfail (recipient_verify.py)
)
RECIPIENT_PROBES = Counter(
    "kubemta_recipient_probes_total",
    "LMTP RCPT probes sent to mailbox servers (verifications not answered from the cache), by result",
    ["result"],  # known, unknown, tempfail
)
RECIPIENT_PROBE_CACHE_HITS = Counter(
    "kubemta_recipient_probe_cache_hits_total", "LMTP recipient verifications answered from the probe cache"
)


def preinitialise_rejections(reasons: Iterable[str]) -> None:
    """Create `kubemta_messages_rejected_total{reason}` at 0 for every known reason."""
    preinitialise(MESSAGES_REJECTED, reason=list(reasons))


preinitialise(DUPLICATES, stage=["ingress"])
SUPPRESSION_CHECKS = Counter(
    "kubemta_suppression_checks_total",
    "Recipients checked against the suppression list, by result: suppressed (refused), not_suppressed, unavailable "
    "(no tracker answered in time: accepted, fail-open)",
    ["result"],
)
preinitialise(SUPPRESSION_CHECKS, result=["suppressed", "not_suppressed", "unavailable"])
SUPPRESSION_CACHE_HITS = Counter(
    "kubemta_suppression_cache_hits_total", "Suppression checks answered from this ingress' cache"
)
