"""SMTP replies mapped to per-recipient results: outcome, RFC 3463 status code, diagnostic.

A 2xx reply delivers, 4xx defers and 5xx bounces (RFC 5321 §4.2.1); the enhanced
status code is taken from the reply text when the server sent one (RFC 2034 §3), else
derived from the reply class (RFC 3463 §3.1: X.0.0).
"""

import re

from kubemta.v1 import message_pb2
from kubemta_common.logs import sanitize

# RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5.
_ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
DIAGNOSTIC_LIMIT = 500


def outcome_for(code: int) -> message_pb2.Outcome.ValueType:
    """2xx -> delivered, 5xx -> permanent, anything else -> temporary (RFC 5321 §4.2.1)."""
    if 200 <= code < 300:
        return message_pb2.OUTCOME_DELIVERED
    if 500 <= code < 600:
        return message_pb2.OUTCOME_PERMANENT
    return message_pb2.OUTCOME_TEMPORARY


def _status_class(outcome: message_pb2.Outcome.ValueType) -> str:
    if outcome == message_pb2.OUTCOME_DELIVERED:
        return "2"
    if outcome == message_pb2.OUTCOME_PERMANENT:
        return "5"
    return "4"


def enhanced_status(outcome: message_pb2.Outcome.ValueType, text: str) -> str:
    """The reply's enhanced status code when it has one of the outcome's class, else `<class>.0.0`."""
    wanted = _status_class(outcome)
    match = _ENHANCED_CODE.match(text.strip())
    if match is None:
        return f"{wanted}.0.0"
    # A mismatched class (e.g. "550 4.2.0") is re-classed: the reply code decides the outcome.
    return f"{wanted}.{match.group(2)}.{match.group(3)}"


def reply_diagnostic(code: int, text: str) -> str:
    """A server reply as one line, `code text`, safe to log and to put into a DSN."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return sanitize(f"{code} {joined}".strip(), DIAGNOSTIC_LIMIT)


def reply_result(
    recipient: str, code: int, text: str, remote_mta: str, *, outcome: message_pb2.Outcome.ValueType | None = None
) -> message_pb2.RecipientResult:
    """The result of a recipient answered by an SMTP reply (outcome from the code unless given)."""
    final = outcome_for(code) if outcome is None else outcome
    return message_pb2.RecipientResult(
        recipient=recipient,
        outcome=final,
        smtp_code=code if 0 < code < 1000 else 0,
        status=enhanced_status(final, text),
        diagnostic=reply_diagnostic(code, text),
        remote_mta=remote_mta,
    )


def local_result(
    recipient: str,
    outcome: message_pb2.Outcome.ValueType,
    status: str,
    diagnostic: str,
    *,
    smtp_code: int = 0,
    remote_mta: str = "",
) -> message_pb2.RecipientResult:
    """The result of a recipient decided locally (no usable reply, or a policy check)."""
    return message_pb2.RecipientResult(
        recipient=recipient,
        outcome=outcome,
        smtp_code=smtp_code,
        status=status,
        diagnostic=sanitize(diagnostic, DIAGNOSTIC_LIMIT),
        remote_mta=remote_mta,
    )


def outcome_name(outcome: message_pb2.Outcome.ValueType) -> str:
    """The metric/log word for an outcome: delivered, deferred or bounced."""
    if outcome == message_pb2.OUTCOME_DELIVERED:
        return "delivered"
    if outcome == message_pb2.OUTCOME_PERMANENT:
        return "bounced"
    return "deferred"
