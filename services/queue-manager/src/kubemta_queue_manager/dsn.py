"""Delivery status notifications (RFC 3464): the bounce, delay-warning and success messages sent to senders.

A DSN is a `multipart/report; report-type=delivery-status` message (RFC 6522) with
three parts: a human-readable explanation, the machine-readable
`message/delivery-status` (RFC 3464 §2.2 per-message fields, then one §2.3 block per
recipient) and the original message's header block as `text/rfc822-headers`, or, for a
failure whose sender asked for RET=FULL (RFC 3461 §4.3), the whole message as
`message/rfc822` when it can be returned (dsn_returned.py).

The sender's DSN parameters appear as RFC 3464 asks: ENVID as `Original-Envelope-Id`
(§2.2.1), each ORCPT as `Original-Recipient` (§2.3.1). A failure's class
(kubemta_common.bounce_class) is explained in the human-readable part.

It is written line by line (dsn_mime), never through a library that would decode or
re-fold what it is given: every value that comes from outside (addresses, reply
texts, host names, queue ids) passes `dsn_fields.field_value`, so it is one line of
safe characters and no input can add a header line or a field. Any address yields a
well-formed DSN; one that cannot be written as an addr-spec gets
`To: undisclosed-recipients:;` (the envelope still carries it). A sender with a
non-ASCII address used SMTPUTF8 (RFC 6531): its To: is UTF-8 and, when a recipient
address is non-ASCII too, the report is `message/global-delivery-status` with the
address readable (RFC 6533 §3 unitext); elsewhere non-ASCII addresses are xtext.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from enum import StrEnum

from kubemta_queue_manager.dsn_fields import (
    FieldValue,
    Reply,
    diagnostic_value,
    field_value,
    final_recipient,
    header_line,
    host_value,
    is_utf8_address,
    mailbox,
    one_line,
    original_recipient,
    status_code,
    unitext_address,
    xtext_address,
)
from kubemta_queue_manager.dsn_fields import smtp_reply as _smtp_reply
from kubemta_queue_manager.dsn_mime import Part, fields_part, multipart, text_part
from kubemta_queue_manager.dsn_reasons import class_line
from kubemta_queue_manager.dsn_returned import returnable_message

__all__ = [
    "Action",
    "RecipientReport",
    "Report",
    "build_dsn",
    "diagnostic_code",
    "final_recipient",
    "human_text",
    "original_headers",
    "smtp_reply",
    "unitext_address",
    "xtext_address",
]

MAILER_DAEMON = "MAILER-DAEMON"
SUBJECT_FAILED = "Undelivered Mail Returned to Sender"
SUBJECT_DELAYED = "Delayed Mail (still being retried)"
SUBJECT_SUCCESS = "Successful Mail Delivery Report"
AUTO_SUBMITTED = "auto-replied"
"""RFC 3834 §5: a message generated in response to another one."""
UNDISCLOSED = "undisclosed-recipients:;"
"""RFC 5322 §3.4 group with no members: the To: of a sender that is no valid addr-spec."""


class Action(StrEnum):
    """RFC 3464 §2.3.3 action values kubemta reports."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    """Success (NOTIFY=SUCCESS): final delivery, to the recipient's mailbox."""
    RELAYED = "relayed"
    """Success (NOTIFY=SUCCESS): handed to a next hop that does not report delivery status itself."""


SUCCESS_ACTIONS = frozenset({Action.DELIVERED, Action.RELAYED})


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """What to report about one recipient."""

    recipient: str
    status: str
    """RFC 3463 enhanced status code to report, e.g. 5.1.1 (4.4.7 for an expired recipient)."""
    smtp_code: int = 0
    """The SMTP reply code, 0 when no SMTP reply was received."""
    diagnostic: str = ""
    remote_mta: str = ""
    expired: bool = False
    """Bounced because it stayed in the queue too long, not because of a permanent failure."""
    reply_status: str = ""
    """The enhanced status code of the SMTP reply itself, when it differs from `status` (an expiry)."""
    action: Action | None = None
    """This recipient's action when it differs from the report's (a success report: delivered or relayed)."""
    orcpt_type: str = ""
    orcpt_address: str = ""
    """RFC 3461 ORCPT (addr-type, decoded address): the recipient as the sender gave it; empty when not given."""
    bounce_class: str = ""
    """A failure's class (kubemta_common.bounce_class value), empty when unknown."""
    hard: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    """One DSN: about which message, to whom, and which recipients (of any domains)."""

    hostname: str
    queue_id: str
    """Queue id of the original message."""
    sender: str
    """The original envelope sender, who receives the DSN."""
    arrival: datetime
    last_attempt: datetime
    action: Action
    recipients: Sequence[RecipientReport]
    original_content: bytes
    """The original message's header block, returned as text/rfc822-headers (or, when `full_message`
    cannot be returned, the header block of it)."""
    will_retry_until: datetime | None = None
    envid: str = ""
    """RFC 3461 ENVID of the original message, empty when none was given."""
    full_message: bytes = b""
    """A failure DSN with RET=FULL: the whole original message, returned when it can be (dsn_returned.py)."""
    too_large: bool = False
    """RET=FULL was asked but the message exceeded KUBEMTA_DSN_RETURN_SIZE_LIMIT: headers only, and said so."""

    @property
    def success(self) -> bool:
        """A success report (NOTIFY=SUCCESS), not a failure or a delay warning."""
        return self.action in SUCCESS_ACTIONS


def _reply(entry: RecipientReport) -> Reply:
    return Reply(entry.smtp_code, entry.reply_status or entry.status, entry.diagnostic)


def smtp_reply(entry: RecipientReport) -> str:
    """`550 5.1.1 text`: the reply with its codes, on one line (not yet made safe: see field_value)."""
    return _smtp_reply(_reply(entry))


def diagnostic_code(entry: RecipientReport) -> FieldValue:
    """The Diagnostic-Code value (RFC 3464 §2.3.6): `smtp;` with the reply, else `X-kubemta;` with the text."""
    return diagnostic_value(_reply(entry))


def _action(report: Report, entry: RecipientReport) -> Action:
    return entry.action if entry.action is not None else report.action


def _success_line(report: Report, entry: RecipientReport) -> str:
    how = (
        "delivered to the mailbox"
        if _action(report, entry) is Action.DELIVERED
        else "relayed to a system that does not report delivery status"
    )
    if entry.smtp_code and entry.remote_mta:
        return f"{how}: host {one_line(entry.remote_mta)} said: {smtp_reply(entry)}"
    return f"{how}: {smtp_reply(entry)}" if entry.smtp_code else how


def _reason(entry: RecipientReport) -> str:
    if entry.smtp_code and entry.remote_mta:
        reason = f"host {one_line(entry.remote_mta)} said: {smtp_reply(entry)}"
    elif entry.smtp_code:
        reason = smtp_reply(entry)
    else:
        reason = one_line(entry.diagnostic) or f"delivery failed with status {entry.status}"
    if entry.expired:
        reason = f"message expired in the queue; last error: {reason}"
    return reason


def _human_duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def human_lines(report: Report, now: datetime) -> list[FieldValue]:
    """The human-readable first part, in the style of Postfix's bounce templates, one safe line each."""
    host = field_value(report.hostname, utf8=True)
    lines = [f"This is the mail system at host {host}.", ""]
    if report.success:
        lines += [
            "Your message was delivered to the destination(s) listed below.",
            "Where it reached the recipient's mailbox, this is the last notice",
            "you will get about it; where it was relayed to another system,",
            "that system may still send you notices of delivery problems.",
        ]
    elif report.action is Action.DELAYED:
        lines += [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for {_human_duration((now - report.arrival).total_seconds())}.",
        ]
        if report.will_retry_until is not None:
            lifetime = (report.will_retry_until - report.arrival).total_seconds()
            lines.append(f"It will be retried until it is {_human_duration(lifetime)} old.")
    elif _returned_message(report) is not None:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. Your message is",
            "attached below.",
        ]
    else:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The headers of your",
            "message are attached below.",
        ]
        if report.too_large:
            lines += [
                "Only its headers are returned: the whole message is larger",
                "than this mail system returns in a notification.",
            ]
        elif report.full_message:
            lines += [
                "Only its headers are returned: the whole message cannot be",
                "returned as it is (it is not 7-bit mail and cannot be made so).",
            ]
    lines += [
        "",
        "For further assistance, please send mail to the postmaster of",
        f"{host} and include this problem report.",
        "",
        "                   The mail system",
        "",
    ]
    safe = [field_value(line, utf8=True) for line in lines]
    # One gate over the whole line: a long line is cut once, between escapes, never inside one.
    for entry in report.recipients:
        said = _success_line(report, entry) if report.success else _reason(entry)
        safe.append(field_value(f"<{entry.recipient}>: {said}", utf8=True))
        reason = None if report.success else class_line(entry.bounce_class, entry.hard)
        if reason is not None:
            safe.append(field_value(reason))
    return safe


def human_text(report: Report, now: datetime) -> str:
    """The human-readable first part as text with CRLF line endings."""
    return "".join(line + "\r\n" for line in human_lines(report, now))


def _header_lines(content: bytes) -> list[str]:
    lines = original_headers(content).split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def original_headers(content: bytes) -> str:
    """The header block of a message (everything before the first empty line), LF line endings."""
    normalised = content.replace(b"\r\n", b"\n")
    end = normalised.find(b"\n\n")
    block = normalised if end < 0 else normalised[: end + 1]
    return block.decode("utf-8", "replace")


def _date(value: datetime) -> FieldValue:
    return field_value(format_datetime(value))


def _returned_message(report: Report) -> bytes | None:
    """The whole message to return (a failure with RET=FULL that can be returned), else None: its headers."""
    if report.action is not Action.FAILED or not report.full_message or report.too_large:
        return None
    return returnable_message(report.full_message)


def _per_message_block(report: Report) -> list[str]:
    envid = [header_line("Original-Envelope-Id", field_value(report.envid))] if report.envid else []  # §2.2.1
    return [
        *envid,
        header_line("Reporting-MTA", field_value(f"dns; {host_value(report.hostname)}")),  # RFC 3464 §2.2.2
        header_line("X-Kubemta-Queue-ID", field_value(report.queue_id)),  # §2.2.1 allows extension fields
        header_line("Arrival-Date", _date(report.arrival)),  # §2.2.5
    ]


def _per_recipient_block(report: Report, entry: RecipientReport, *, utf8: bool) -> list[str]:
    action = _action(report, entry)
    fallback = {Action.DELAYED: "4.0.0", Action.FAILED: "5.0.0"}.get(action, "2.0.0")
    status = entry.status if not report.success or entry.status.startswith("2.") else fallback
    block = []
    if entry.orcpt_address:
        orcpt = original_recipient(entry.orcpt_type, entry.orcpt_address, utf8=utf8)
        block.append(header_line("Original-Recipient", orcpt))  # RFC 3464 §2.3.1
    block += [
        header_line("Final-Recipient", final_recipient(entry.recipient, utf8=utf8)),  # §2.3.2
        header_line("Action", field_value(action.value)),  # §2.3.3
        header_line("Status", status_code(status, fallback)),  # §2.3.4
    ]
    if entry.remote_mta:
        block.append(header_line("Remote-MTA", field_value(f"dns; {host_value(entry.remote_mta)}")))  # §2.3.5
    if entry.smtp_code or not report.success:  # a success without a reply has nothing to diagnose
        block.append(header_line("Diagnostic-Code", diagnostic_code(entry)))  # §2.3.6
    block.append(header_line("Last-Attempt-Date", _date(report.last_attempt)))  # §2.3.7
    if report.action is Action.DELAYED and report.will_retry_until is not None:
        block.append(header_line("Will-Retry-Until", _date(report.will_retry_until)))  # §2.3.9
    return block


def _from_address(hostname: str) -> FieldValue:
    address = mailbox(f"{MAILER_DAEMON}@{hostname}", utf8=False)
    return field_value(f"Mail Delivery System <{address or MAILER_DAEMON + '@localhost.invalid'}>")


def _message_id(message_id: str, hostname: str) -> FieldValue:
    """`message_id` when it is an RFC 5322 §3.6.4 msg-id (a dot-atom left of the @), else one of our host."""
    inner = message_id[1:-1] if message_id.startswith("<") and message_id.endswith(">") else ""
    if inner and not inner.startswith('"') and mailbox(inner, utf8=False) == inner:
        return field_value(message_id)
    fallback = mailbox(f"invalid-id@{hostname}", utf8=False)
    return field_value(f"<{fallback or 'invalid-id@localhost.invalid'}>")


def build_dsn(report: Report, *, message_id: str, now: datetime) -> bytes:
    """The complete DSN message, CRLF line endings; `message_id` is its Message-ID (with angle brackets).

    Never raises for any content of `report`: every outside value is made one safe line.
    """
    smtputf8 = not report.sender.isascii()
    to = mailbox(report.sender, utf8=smtputf8)
    global_report = smtputf8 and any(
        is_utf8_address(entry.recipient) or is_utf8_address(entry.orcpt_address) for entry in report.recipients
    )
    report_type = "global-delivery-status" if global_report else "delivery-status"
    headers = [
        header_line("From", _from_address(report.hostname)),
        header_line("To", to if to is not None else field_value(UNDISCLOSED)),
        header_line("Subject", field_value(_subject(report))),
        header_line("Date", _date(now)),
        header_line("Message-ID", _message_id(message_id, report.hostname)),
        header_line("Auto-Submitted", field_value(AUTO_SUBMITTED)),
        header_line("MIME-Version", field_value("1.0")),
    ]
    blocks = [_per_message_block(report)]
    blocks += [_per_recipient_block(report, entry, utf8=global_report) for entry in report.recipients]
    parts: list[Part] = [
        text_part(human_lines(report, now), "text/plain", "Notification"),
        fields_part(blocks, f"message/{report_type}", "Delivery report", utf8=global_report),
        _returned_part(report),
    ]
    return multipart(headers, field_value(f"multipart/report; report-type={report_type}"), parts)


def _subject(report: Report) -> str:
    if report.success:
        return SUBJECT_SUCCESS
    return SUBJECT_DELAYED if report.action is Action.DELAYED else SUBJECT_FAILED


def _returned_part(report: Report) -> Part:
    """The third part: the whole message (RET=FULL, when it can be returned) or the original headers."""
    whole = _returned_message(report)
    if whole is not None:
        headers = [
            header_line("Content-Type", field_value("message/rfc822")),
            header_line("Content-Transfer-Encoding", field_value("7bit")),
            header_line("Content-Description", field_value("Undelivered Message")),
        ]
        return Part(headers, whole)
    description = {Action.DELAYED: "Delayed Message Headers", Action.FAILED: "Undelivered Message Headers"}
    return text_part(
        _header_lines(report.original_content),
        "text/rfc822-headers",
        description.get(report.action, "Delivered Message Headers"),
    )
