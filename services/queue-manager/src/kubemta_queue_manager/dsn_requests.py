"""DSN requests: what one delivery result contributes to a DSN, and the DSN made of several of them.

The results handler does not send DSNs itself: a message to several domains is split into one
job per domain, and their results arrive one by one, so each would bounce on its own. Instead
it publishes a `DsnRequest` (the recipients to report, the original headers, the dates) to the
`dsn` queue, and the batcher (dsn_batcher.py) turns every request for the same message and
action that arrives within the batch window into one DSN (`dsn_message`); a success report's
"delivered" and "relayed" recipients meet in one DSN, each with its own action. Pure functions.

A request carries what its DSN reports of the sender's DSN parameters (RFC 3461): ENVID, each
recipient's ORCPT and, for a failure with RET=FULL, the whole message when it is at most
`return_size_limit` bytes (else `original_content_too_large`).
"""

from collections.abc import Sequence
from datetime import datetime

from kubemta.v1 import message_pb2
from kubemta_common import message_headers
from kubemta_common.dsn_parameters import recipient_dsn
from kubemta_common.timestamps import to_datetime
from kubemta_queue_manager.dsn import SUCCESS_ACTIONS, Action, RecipientReport, Report, build_dsn
from kubemta_queue_manager.fate import Decision, Disposition, RecipientFate

MAX_ORIGINAL_HEADERS = 64 * 1024
"""Bytes of the original header block a request carries (RFC 3462 returns headers; a bound keeps requests small)."""

ACTIONS: dict[Action, "message_pb2.DsnAction.ValueType"] = {
    Action.FAILED: message_pb2.DSN_ACTION_FAILED,
    Action.DELAYED: message_pb2.DSN_ACTION_DELAYED,
    Action.DELIVERED: message_pb2.DSN_ACTION_DELIVERED,
    Action.RELAYED: message_pb2.DSN_ACTION_RELAYED,
}
ACTION_OF = {value: action for action, value in ACTIONS.items()}


def header_block(content: bytes, limit: int = MAX_ORIGINAL_HEADERS) -> bytes:
    """The header block of `content` a DSN returns (kubemta_common.message_headers), at most `limit` octets."""
    return message_headers.header_block(content, limit)


def success_action(fate: RecipientFate) -> Action:
    """A delivered recipient's success action: `delivered` at a final destination (LMTP), else `relayed` (RFC 3464
    §2.3.3; a result without a handoff, from an older worker, counts as relayed)."""
    return Action.DELIVERED if fate.result.handoff == message_pb2.HANDOFF_DELIVERED else Action.RELAYED


def dsn_request(
    result: message_pb2.DeliveryResult,
    decision: Decision,
    fates: Sequence[RecipientFate],
    action: Action,
    now: datetime,
    *,
    return_size_limit: int = 0,
) -> message_pb2.DsnRequest:
    """The request to report `fates` of `result`'s job to its sender (a failure with RET=FULL carries the whole
    message when it is at most `return_size_limit` bytes)."""
    job = result.job
    request = message_pb2.DsnRequest(
        queue_id=job.queue_id,
        sender=job.sender,
        action=ACTIONS[action],
        recipients=[_recipient(job, fate) for fate in fates],
        original_headers=header_block(job.content),
        job_id=job.job_id,
        message_id=job.message_id,
        envid=job.envid,
    )
    if action is Action.FAILED and job.ret == message_pb2.DSN_RET_FULL:
        if len(job.content) <= return_size_limit:
            request.original_content = job.content
        else:
            request.original_content_too_large = True
    request.arrival_time.CopyFrom(job.arrival_time)
    if result.HasField("attempted_at"):
        request.last_attempt.CopyFrom(result.attempted_at)
    else:
        request.last_attempt.FromDatetime(now)
    if action is Action.DELAYED and decision.will_retry_until is not None:
        request.will_retry_until.FromDatetime(decision.will_retry_until)
    return request


def _recipient(job: message_pb2.DeliveryJob, fate: RecipientFate) -> message_pb2.DsnRecipient:
    entry = fate.result
    dsn = recipient_dsn(job, entry.recipient)
    found = fate.classification
    return message_pb2.DsnRecipient(
        recipient=entry.recipient,
        status=fate.status,
        smtp_code=entry.smtp_code,
        diagnostic=entry.diagnostic,
        remote_mta=entry.remote_mta,
        expired=fate.disposition is Disposition.EXPIRED,
        reply_status=entry.status,
        orcpt_type=dsn.orcpt_type if dsn is not None else "",
        orcpt_address=dsn.orcpt_address if dsn is not None else "",
        bounce_class=found.bounce_class.value if found is not None else "",
        hard=found.hard if found is not None else False,
    )


def merged_report(requests: Sequence[message_pb2.DsnRequest], hostname: str) -> Report:
    """One report of every recipient of `requests` (the same message and action), each recipient once.

    The latest attempt date and the latest will-retry-until win; a recipient reported twice (a
    request delivered again after a crash) keeps its first entry.
    """
    first = requests[0]
    seen: dict[str, RecipientReport] = {}
    for request in requests:
        action = ACTION_OF.get(request.action, Action.FAILED)
        for entry in request.recipients:
            seen.setdefault(entry.recipient, _report_entry(entry, action if action in SUCCESS_ACTIONS else None))
    last_attempt = max(to_datetime(request.last_attempt) for request in requests)
    retry_until = [to_datetime(r.will_retry_until) for r in requests if r.HasField("will_retry_until")]
    return Report(
        hostname=hostname,
        queue_id=first.queue_id,
        sender=first.sender,
        arrival=to_datetime(first.arrival_time),
        last_attempt=last_attempt,
        action=ACTION_OF.get(first.action, Action.FAILED),
        recipients=list(seen.values()),
        original_content=max((request.original_headers for request in requests), key=len),
        will_retry_until=max(retry_until) if retry_until else None,
        envid=next((request.envid for request in requests if request.envid), ""),
        full_message=max((request.original_content for request in requests), key=len),
        too_large=any(request.original_content_too_large for request in requests),
    )


def _report_entry(entry: message_pb2.DsnRecipient, action: Action | None) -> RecipientReport:
    return RecipientReport(
        recipient=entry.recipient,
        status=entry.status,
        smtp_code=entry.smtp_code,
        diagnostic=entry.diagnostic,
        remote_mta=entry.remote_mta,
        expired=entry.expired,
        reply_status=entry.reply_status,
        action=action,
        orcpt_type=entry.orcpt_type,
        orcpt_address=entry.orcpt_address,
        bounce_class=entry.bounce_class,
        hard=entry.hard,
    )


def dsn_message(report: Report, *, queue_id: str, now: datetime) -> message_pb2.AcceptedMessage:
    """The DSN of `report`, as a new message from <> to the original sender (it re-enters at `inbound`)."""
    message_id = f"<{queue_id}@{report.hostname}>"
    content = build_dsn(report, message_id=message_id, now=now)
    dsn = message_pb2.AcceptedMessage(
        queue_id=queue_id,
        message_id=message_id,
        sender="",
        recipients=[report.sender],
        content=content,
        client_helo=report.hostname,
        generated=True,
        smtputf8=not report.sender.isascii(),
    )
    dsn.arrival_time.FromDatetime(now)
    return dsn
