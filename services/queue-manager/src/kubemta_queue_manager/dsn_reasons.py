"""The `Reason:` line under a failed or delayed recipient in a DSN's human-readable part: what its bounce class
(kubemta_common.bounce_class) means to the sender, and whether it is permanent."""

from kubemta_common.bounce_class import BounceClass

CLASS_REASONS: dict[BounceClass, str] = {
    BounceClass.INVALID_RECIPIENT: "the recipient address does not exist",
    BounceClass.MAILBOX_FULL: "the recipient's mailbox is full",
    BounceClass.MESSAGE_TOO_LARGE: "the message is larger than the receiving system takes",
    BounceClass.CONTENT_BLOCKED: "the receiving system refused the content (spam or malware filter)",
    BounceClass.POLICY: "the receiving system's policy refused the message (e.g. SPF, DKIM or DMARC)",
    BounceClass.REPUTATION: "the receiving system refused the sending server (reputation or blocklist)",
    BounceClass.RATE_LIMITED: "the receiving system limits how much mail it takes from this server",
    BounceClass.DNS_FAILURE: "the destination domain or its mail server could not be found in DNS",
    BounceClass.TLS_FAILURE: "no secure (TLS) connection to the receiving system could be made",
    BounceClass.CONNECTION_FAILURE: "the receiving system could not be reached",
    BounceClass.EXPIRED: "the message could not be delivered before its time in the queue ran out",
    BounceClass.OTHER: "the reply below says why",
}
"""The `Reason:` line of a failed or delayed recipient in the human-readable part, by class."""


def class_line(bounce_class: str, hard: bool) -> str | None:
    """`Reason: <what it means> (<class>, permanent|temporary)`, or None for a class kubemta does not know."""
    try:
        found = BounceClass(bounce_class)
    except ValueError:
        return None
    kind = "permanent" if hard else "temporary"
    return f"    Reason: {CLASS_REASONS[found]} ({found.value.replace('_', ' ')}, {kind})"
