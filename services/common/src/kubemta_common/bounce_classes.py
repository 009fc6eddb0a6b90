"""The bounded set of bounce classes (`kubemta_common.bounce_class` re-exports it with `classify`).

A module of its own so that the tables that name classes (`bounce_texts`) and `classify`,
which reads them, import it without importing each other.
"""

from enum import StrEnum


class BounceClass(StrEnum):
    """The bounded set of failure classes (a metric label: never add a value computed from input)."""

    INVALID_RECIPIENT = "invalid_recipient"
    MAILBOX_FULL = "mailbox_full"
    MESSAGE_TOO_LARGE = "message_too_large"
    CONTENT_BLOCKED = "content_blocked"
    POLICY = "policy"
    REPUTATION = "reputation"
    RATE_LIMITED = "rate_limited"
    DNS_FAILURE = "dns_failure"
    TLS_FAILURE = "tls_failure"
    CONNECTION_FAILURE = "connection_failure"
    EXPIRED = "expired"
    OTHER = "other"
