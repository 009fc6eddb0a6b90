"""Prometheus metrics of the delivery-worker, pre-initialised so every series exists at 0.

`kubemta_recipients_delivered_total{provider}` and `kubemta_queue_time_seconds` are the queue-manager's metrics
(same names, labels, help and buckets): a job whose every recipient was delivered, with no success DSN owed, ends
at the worker (finished.py) and is counted here; every other outcome is counted by the queue-manager. Queries
sum over both services.
"""

from prometheus_client import Counter, Histogram

from kubemta_common.final_metrics import QUEUE_TIME as QUEUE_TIME  # re-exported: counted here too
from kubemta_common.final_metrics import RECIPIENTS_DELIVERED as RECIPIENTS_DELIVERED
from kubemta_common.metrics import DUPLICATES, preinitialise

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

# Connection reuse (pool.py), destination back-off (destinations.py), held jobs (handler.py).
SMTP_CONNECTIONS_REUSED = Counter(
    "kubemta_smtp_connections_reused_total",
    "Mail transactions sent over a cached SMTP connection (after a successful RSET) instead of a new one",
)
DESTINATION_BACKOFFS = Counter(
    "kubemta_destination_backoffs_total",
    "Times a destination was paused after a 421 or 4.7.x rate-limit reply",
)
DESTINATION_DEFERRALS = Counter(
    "kubemta_destination_deferrals_total",
    "Jobs deferred without a connection because their destination was paused or busy",
    ["reason"],
)
# Why the worker moved a job to `held`: poison (returned to the queue `delivery_limit` times
# without a result, e.g. it crashed the handler) or malformed (failed job_checks before delivery).
HELD_REASONS: tuple[str, ...] = ("poison", "malformed")
JOBS_HELD = Counter(
    "kubemta_jobs_held_total",
    "Jobs moved to `held` by the worker, by reason: poison (returned too often) or malformed (failed the checks)",
    ["reason"],
)


preinitialise(DUPLICATES, stage=["delivery-worker"])
preinitialise(DESTINATION_DEFERRALS, reason=("backoff", "busy"))
preinitialise(JOBS_HELD, reason=HELD_REASONS)

# Outbound TLS (tls_negotiation.py): one count per session set-up.
TLS_OUTBOUND_RESULTS: tuple[str, ...] = (
    "verified",
    "encrypted",
    "plaintext",
    "not_offered",
    "handshake_failed",
    "verify_failed",
    "mx_mismatch",
)
TLS_OUTBOUND = Counter(
    "kubemta_tls_outbound_total",
    "Outgoing SMTP sessions by TLS result: verified, encrypted (not verified), plaintext, or why required TLS failed",
    ["result"],
)
preinitialise(TLS_OUTBOUND, result=TLS_OUTBOUND_RESULTS)
