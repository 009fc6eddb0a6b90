"""Delivery status notifications (RFC 3464): the bounce and delay-warning messages sent to senders.

A DSN is a `multipart/report; report-type=delivery-status` message (RFC 6522) with
three parts: a human-readable explanation, the machine-readable
`message/delivery-status` (RFC 3464 §2.2 per-message fields, then one §2.3 block per
recipient) and the original message's header block as `text/rfc822-headers`. It is
built with the stdlib `email` package and serialised with CRLF line endings.
"""

import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime
from enum import StrEnum

MAILER_DAEMON = "MAILER-DAEMON"
SUBJECT_FAILED = "Undelivered Mail Returned to Sender"
SUBJECT_DELAYED = "Delayed Mail (still being retried)"
AUTO_SUBMITTED = "auto-replied"
"""RFC 3834 §5: a message generated in response to another one."""

type _Policy = email.policy.EmailPolicy[EmailMessage]

_MAX_LINE = 998
"""RFC 5322 §2.1.1: the longest line a message may carry."""

_MAX_DIAGNOSTIC = 800
"""Diagnostic text is cut here so a Diagnostic-Code field stays one line under _MAX_LINE."""

_ENHANCED_CODE_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?:\s|$)")
"""RFC 3463 §2: an enhanced status code at the start of a reply text."""


class Action(StrEnum):
    """RFC 3464 §2.3.3 action values kubemta reports."""

    FAILED = "failed"
    DELAYED = "delayed"


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


@dataclass(frozen=True, slots=True)
class Report:
    """One DSN: about which message, to whom, and which recipients."""

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
    will_retry_until: datetime | None = None


def xtext_address(address: str) -> str:
    """RFC 6533 §3 utf-8-addr-xtext: non-QCHAR characters (and `+`, `=`, `\\`) as `\\x{HEX}`."""
    return "".join(
        char if 0x21 <= ord(char) <= 0x7E and char not in "+=\\" else f"\\x{{{ord(char):X}}}" for char in address
    )


def final_recipient(address: str) -> str:
    """The Final-Recipient value (RFC 3464 §2.3.2): `rfc822;` or, for a non-ASCII address, `utf-8;` (RFC 6533)."""
    if address.isascii():
        return f"rfc822; {address}"
    return f"utf-8; {xtext_address(address)}"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DIAGNOSTIC else text[:_MAX_DIAGNOSTIC] + "..."


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def smtp_reply(entry: RecipientReport) -> str:
    """`550 5.1.1 text`: the reply with its codes, not repeating codes the text already starts with."""
    text = _one_line(entry.diagnostic)
    code = str(entry.smtp_code)
    if text.startswith((code + " ", code + "-")) or text == code:
        return text
    if _ENHANCED_CODE_RE.match(text):
        return f"{code} {text}"
    return f"{code} {entry.reply_status or entry.status} {text}".rstrip()


def diagnostic_code(entry: RecipientReport) -> str:
    """The Diagnostic-Code value (RFC 3464 §2.3.6): `smtp;` with the reply, else `X-kubemta;` with the text."""
    if entry.smtp_code:
        return f"smtp; {_ascii(smtp_reply(entry))}"
    return f"X-kubemta; {_ascii(_one_line(entry.diagnostic)) or 'no further information'}"


def _reason(entry: RecipientReport) -> str:
    if entry.smtp_code and entry.remote_mta:
        reason = f"host {entry.remote_mta} said: {smtp_reply(entry)}"
    elif entry.smtp_code:
        reason = smtp_reply(entry)
    else:
        reason = _one_line(entry.diagnostic) or f"delivery failed with status {entry.status}"
    if entry.expired:
        reason = f"message expired in the queue; last error: {reason}"
    return reason


def _human_duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def human_text(report: Report, now: datetime) -> str:
    """The human-readable first part, in the style of Postfix's bounce templates."""
    lines = [f"This is the mail system at host {report.hostname}.", ""]
    if report.action is Action.DELAYED:
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
    else:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The headers of your",
            "message are attached below.",
        ]
    lines += [
        "",
        "For further assistance, please send mail to the postmaster of",
        f"{report.hostname} and include this problem report.",
        "",
        "                   The mail system",
        "",
    ]
    lines += [f"<{entry.recipient}>: {_reason(entry)}" for entry in report.recipients]
    return "\r\n".join(lines) + "\r\n"


def original_headers(content: bytes) -> str:
    """The header block of a message (everything before the first empty line)."""
    normalised = content.replace(b"\r\n", b"\n")
    end = normalised.find(b"\n\n")
    block = normalised if end < 0 else normalised[: end + 1]
    return block.decode("utf-8", "replace")


def _cte_for(text: str) -> str:
    """7bit when the text can travel as is, else quoted-printable (a DSN must pass 7-bit relays)."""
    if text.isascii() and all(len(line) <= _MAX_LINE for line in text.splitlines()):
        return "7bit"
    return "quoted-printable"


def _text_part(text: str, subtype: str, description: str, policy: _Policy) -> EmailMessage:
    part = EmailMessage(policy=policy)
    part.set_content(text, subtype=subtype, cte=_cte_for(text))
    del part["MIME-Version"]  # set_content adds it; RFC 2045 §4 wants it only on the top-level message
    part["Content-Description"] = description
    return part


def _per_message_block(report: Report, policy: _Policy) -> EmailMessage:
    block = EmailMessage(policy=policy)
    block["Reporting-MTA"] = f"dns; {report.hostname}"  # RFC 3464 §2.2.2
    block["X-Kubemta-Queue-ID"] = report.queue_id  # RFC 3464 §2.2.1 allows extension fields
    block["Arrival-Date"] = format_datetime(report.arrival)  # RFC 3464 §2.2.5
    return block


def _per_recipient_block(report: Report, entry: RecipientReport, policy: _Policy) -> EmailMessage:
    block = EmailMessage(policy=policy)
    block["Final-Recipient"] = final_recipient(entry.recipient)  # RFC 3464 §2.3.2
    block["Action"] = str(report.action)  # §2.3.3
    block["Status"] = entry.status  # §2.3.4
    if entry.remote_mta:
        block["Remote-MTA"] = f"dns; {_ascii(entry.remote_mta)}"  # §2.3.5
    block["Diagnostic-Code"] = diagnostic_code(entry)  # §2.3.6
    block["Last-Attempt-Date"] = format_datetime(report.last_attempt)  # §2.3.7
    if report.action is Action.DELAYED and report.will_retry_until is not None:
        block["Will-Retry-Until"] = format_datetime(report.will_retry_until)  # §2.3.9
    return block


def build_dsn(report: Report, *, message_id: str, now: datetime) -> bytes:
    """The complete DSN message, CRLF line endings; `message_id` is its Message-ID (with angle brackets)."""
    # A sender with a non-ASCII address used SMTPUTF8 (RFC 6531); the DSN's To: must carry it as UTF-8.
    policy = email.policy.SMTP if report.sender.isascii() else email.policy.SMTPUTF8
    message = EmailMessage(policy=policy)
    message["From"] = f"Mail Delivery System <{MAILER_DAEMON}@{report.hostname}>"
    message["To"] = report.sender
    message["Subject"] = SUBJECT_DELAYED if report.action is Action.DELAYED else SUBJECT_FAILED
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = AUTO_SUBMITTED
    message["MIME-Version"] = "1.0"
    message["Content-Type"] = "multipart/report; report-type=delivery-status"

    status = EmailMessage(policy=policy)
    status["Content-Type"] = "message/delivery-status"
    status["Content-Description"] = "Delivery report"
    blocks: list[Message[str, str] | str] = [_per_message_block(report, policy)]
    blocks += [_per_recipient_block(report, entry, policy) for entry in report.recipients]
    status.set_payload(blocks)
    headers_title = "Delayed Message Headers" if report.action is Action.DELAYED else "Undelivered Message Headers"
    message.attach(_text_part(human_text(report, now), "plain", "Notification", policy))
    message.attach(status)
    message.attach(_text_part(original_headers(report.original_content), "rfc822-headers", headers_title, policy))
    # Fields are not folded (the stdlib folder would move a 60-77 character value whole onto a
    # continuation line, which its own parser then reads back with a leading space); every line
    # stays under RFC 5322's 998 limit since diagnostics are cut at _MAX_DIAGNOSTIC.
    return message.as_bytes(policy=policy.clone(max_line_length=_MAX_LINE))
