"""The ingress' Prometheus metrics (names fixed by ARCHITECTURE.md and STYLE.md section 6)."""

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from kubemta_common.metrics import preinitialise

MESSAGES_RECEIVED = Counter(
    "kubemta_messages_received_total", "Messages accepted over SMTP and confirmed by the broker"
)
MESSAGES_REJECTED = Counter(
    "kubemta_messages_rejected_total", "Refused MAIL, RCPT and DATA commands, by reason", ["reason"]
)
SMTP_SESSIONS = Counter("kubemta_smtp_sessions_total", "SMTP connections accepted")
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


def preinitialise_rejections(reasons: Iterable[str]) -> None:
    """Create `kubemta_messages_rejected_total{reason}` at 0 for every known reason."""
    preinitialise(MESSAGES_REJECTED, reason=list(reasons))
