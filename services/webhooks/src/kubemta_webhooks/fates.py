"""Which lifecycle events become webhooks, and what an endpoint is sent: the pure part of the service.

A fate event (`delivered`, `deferred`, `bounced`, `expired`: the queue-manager's RecipientsFate, one
per job) becomes one webhook per matching endpoint (`matches`). Its payload (`payload`) is JSON
rendered once by the leader (docs/webhooks.md): every recipient of the job in it, strings that come
from remote servers or clients (diagnostics, Message-ID, remote MTA names) capped in length and kept
as JSON strings (json.dumps escapes quotes, control characters and everything beyond ASCII), so a
hostile diagnostic can neither break the JSON nor smuggle a field.
"""

import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from kubemta.v1 import events_pb2, message_pb2
from kubemta_webhooks.endpoints import Endpoint

FATES: tuple[str, ...] = ("delivered", "deferred", "bounced", "expired")
"""The lifecycle event kinds that become webhooks (`message.<kind>`)."""
MAX_DIAGNOSTIC = 1000
"""Characters of a remote server's diagnostic kept (RFC 5321 §4.5.3.1.5: a reply line is 512 octets; a
multi-line reply is longer, and its first lines say what matters)."""
MAX_FIELD = 998
"""Characters kept of the other strings from outside (Message-ID, recipient, remote MTA, tag, submitter):
RFC 5322 §2.1.1's line limit, far above any sane value."""
MAX_RECIPIENTS = 1000
"""Recipients listed in one payload (a job has at most KUBEMTA_MAX_RECIPIENTS); the rest are counted."""
_OUTCOMES = {
    message_pb2.OUTCOME_DELIVERED: "delivered",
    message_pb2.OUTCOME_TEMPORARY: "temporary",
    message_pb2.OUTCOME_PERMANENT: "permanent",
}


def fate_of(event: events_pb2.LifecycleEvent) -> str | None:
    """The fate kind of an event (`delivered`, ...), or None when it is no fate event."""
    kind = event.WhichOneof("kind")
    return kind if kind in FATES else None


def matches(endpoint: Endpoint, fate: str, event: events_pb2.LifecycleEvent) -> bool:
    """True when `endpoint` gets this fate event: it asked for the fate, the mail is its submitter's (or it takes
    all mail: "*"), and, when it names tags, the message carries at least one of them."""
    if fate not in endpoint.events:
        return False
    if "*" not in endpoint.submitters and (not event.submitter or event.submitter not in endpoint.submitters):
        return False
    return not endpoint.tags or not endpoint.tags.isdisjoint(event.tags)


def _cap(text: str, limit: int = MAX_FIELD) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def rfc3339(stamp: Timestamp) -> str:
    """A Timestamp as RFC 3339 UTC with milliseconds, e.g. 2026-03-02T10:00:00.000Z."""
    moment = stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else datetime.fromtimestamp(0, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _outcome_name(value: message_pb2.Outcome.ValueType) -> str:
    return _OUTCOMES.get(value, "unknown")


def payload(fate: str, event: events_pb2.LifecycleEvent) -> bytes:
    """The JSON body of the webhook of one fate event (ASCII bytes)."""
    result: events_pb2.RecipientsFate = getattr(event, fate)
    recipients = [
        {
            "recipient": _cap(outcome.recipient),
            "outcome": _outcome_name(outcome.outcome),
            "status": _cap(outcome.status, 32),
            "smtp_code": int(outcome.smtp_code),
            "diagnostic": _cap(outcome.diagnostic, MAX_DIAGNOSTIC),
            "remote_mta": _cap(outcome.remote_mta),
            # the failure's class (kubemta_common.bounce_class: a fixed set, "" when delivered) and hard/soft
            "bounce_class": _cap(outcome.bounce_class, 32),
            "hard": bool(outcome.hard),
        }
        for outcome in result.recipients[:MAX_RECIPIENTS]
    ]
    body: dict[str, object] = {
        "type": f"message.{fate}",
        "id": event.event_id,
        "timestamp": rfc3339(event.time),
        "queue_id": event.queue_id,
        "message_id": _cap(event.message_id),
        "job_id": event.job_id,
        "submitter": _cap(event.submitter),
        "tags": [_cap(tag) for tag in event.tags],
        "domain": _cap(result.domain),
        "attempt": int(event.attempt),
        "recipients": recipients,
    }
    if len(result.recipients) > MAX_RECIPIENTS:
        body["recipients_omitted"] = len(result.recipients) - MAX_RECIPIENTS
    if fate == "deferred" and result.HasField("next_attempt"):
        body["next_attempt"] = rfc3339(result.next_attempt)
    return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
