"""What an operator's DELETE with a DSN reports: every recipient failed permanently with status 5.3.0
"deleted by the administrator", which the queue-manager bounces. The resolver (and the tracker's admin
operations) publish `deletion_result` for a job; the worker builds its result of `deleted_result`s; the
queue-manager's fate turns what it would have retried into `deleted_result`s."""

from kubemta.v1 import message_pb2
from kubemta_common.timestamps import now_timestamp

DELETED_STATUS = "5.3.0"
"""RFC 3463 §3.4: X.3.0 other or undefined mail system status (an operator deleted the message)."""
DELETED_DIAGNOSTIC = "deleted by the administrator"


def deleted_result(recipient: str) -> message_pb2.RecipientResult:
    """`recipient` failed permanently because an operator deleted its message (no SMTP reply)."""
    return message_pb2.RecipientResult(
        recipient=recipient,
        outcome=message_pb2.OUTCOME_PERMANENT,
        smtp_code=0,
        status=DELETED_STATUS,
        diagnostic=DELETED_DIAGNOSTIC,
    )


def deletion_result(job: message_pb2.DeliveryJob, reporter: str) -> message_pb2.DeliveryResult:
    """The result of a job an operator deleted with a DSN: every recipient failed permanently (5.3.0), reported
    by `reporter` (the service) now, so the queue-manager bounces it."""
    return message_pb2.DeliveryResult(
        job=job,
        recipients=[deleted_result(recipient) for recipient in job.recipients],
        attempted_at=now_timestamp(),
        reporter=reporter,
    )
