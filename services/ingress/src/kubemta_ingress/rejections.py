"""Refused SMTP commands: the fixed set of reasons, counted and logged in one place.

A rejection is any refused MAIL, RCPT or DATA (Postfix logs these as `reject:`
lines). The reasons are a closed set so `kubemta_messages_rejected_total{reason}`
stays bounded.
"""

import enum
import logging

from kubemta_common.logs import sanitize
from kubemta_ingress import metrics

logger = logging.getLogger(__name__)


class Reason(enum.StrEnum):
    """Label values of `kubemta_messages_rejected_total{reason}`."""

    RELAY_DENIED = "relay_denied"
    # Recipient verification of local domains (recipient_verify.py): 550 5.1.1 and 450 4.1.1.
    UNKNOWN_RECIPIENT = "unknown_recipient"
    UNVERIFIED_RECIPIENT = "unverified_recipient"
    # A recipient on the cluster's suppression list (suppression_check.py): 550 5.1.1 / 550 5.7.1.
    SUPPRESSED_RECIPIENT = "suppressed_recipient"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    MESSAGE_TOO_BIG = "message_too_big"
    LINE_TOO_LONG = "line_too_long"
    BAD_LINE_ENDING = "bad_line_ending"
    NUL_CHARACTER = "nul_character"
    MAIL_LOOP = "mail_loop"
    BAD_ADDRESS = "bad_address"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    INSUFFICIENT_STORAGE = "insufficient_storage"  # KUBEMTA_MESSAGE_DATA_BUDGET full (data_budget.py): 452 4.3.1
    INTERNAL_ERROR = "internal_error"
    # Authentication and sender authorization (auth.py, sender_identity.py).
    AUTH_FAILED = "auth_failed"
    AUTH_LOCKED = "auth_locked"
    SENDER_NOT_OWNED = "sender_not_owned"
    FROM_NOT_OWNED = "from_not_owned"
    MULTIPLE_FROM = "multiple_from"
    # Session-level refusals (listeners, PROXY protocol, connection and error limits, timeouts).
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_ERRORS = "too_many_errors"
    TIMEOUT = "timeout"
    PROXY_PROTOCOL_ERROR = "proxy_protocol_error"
    STARTTLS_REQUIRED = "starttls_required"
    AUTH_REQUIRED = "auth_required"


metrics.preinitialise_rejections(reason.value for reason in Reason)


def record_rejection(
    reason: Reason, reply: str, *, client: str, helo: str | None, queue_id: str | None = None, **fields: object
) -> None:
    """Count a rejection and log one line about it. The line carries the log context's queue id
    (kubemta_common.logs), or `queue_id` when one is given."""
    metrics.MESSAGES_REJECTED.labels(reason=reason.value).inc()
    extra: dict[str, object] = {
        "reason": reason.value,
        "reply": reply,
        "client": client,
        "helo": sanitize(helo or ""),
    }
    if queue_id is not None:
        extra["queue_id"] = queue_id
    extra.update({key: sanitize(value) if isinstance(value, str) else value for key, value in fields.items()})
    logger.info("reject: %s", reply, extra=extra)
