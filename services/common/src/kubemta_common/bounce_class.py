"""Why a recipient failed, as a class from a bounded set and hard or soft, for metrics, events, logs and DSNs.

A class is derived from what the failure left: the SMTP reply code, the RFC 3463 enhanced status
code and the reply's text (the big providers' texts say more than their codes), or kubemta's own
status for failures without a reply (DNS, TLS, connection, expiry).
"""

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Classification:
    """A failure's class and whether it is hard (retrying will not help: suppress, fix the address)."""

    bounce_class: BounceClass
    hard: bool


_BY_STATUS: dict[str, BounceClass] = {
    "5.1.1": BounceClass.INVALID_RECIPIENT,
    "5.1.2": BounceClass.DNS_FAILURE,
    "5.1.10": BounceClass.INVALID_RECIPIENT,
    "5.2.1": BounceClass.INVALID_RECIPIENT,
    "5.2.2": BounceClass.MAILBOX_FULL,
    "5.2.3": BounceClass.MESSAGE_TOO_LARGE,
    "5.3.4": BounceClass.MESSAGE_TOO_LARGE,
    "5.4.4": BounceClass.DNS_FAILURE,
    "5.7.1": BounceClass.POLICY,
}


def classify(smtp_code: int, status: str, diagnostic: str, *, expired: bool = False) -> Classification:
    """The class of one recipient's failure: `smtp_code` (0 without a reply), `status` (e.g. "5.1.1"),
    `diagnostic` (the reply text or kubemta's own), `expired` when it outlived the queue lifetime."""
    if expired:
        return Classification(BounceClass.EXPIRED, hard=True)
    permanent = status.startswith("5") or 500 <= smtp_code < 600
    found = _BY_STATUS.get("5" + status[1:] if status[:1] in "45" else status, BounceClass.OTHER)
    return Classification(found, hard=permanent and found is not BounceClass.MAILBOX_FULL)
