"""The DSN options of `POST /v1/messages`: SMTP's NOTIFY, RET and ENVID (RFC 3461) for API callers.

A JSON request asks with `"dsn": {"notify": [...], "ret": ..., "envid": ...}`
(api_message_model.DsnRequest); a raw message with the query parameters `notify`
(comma-separated, as SMTP's NOTIFY), `ret` and `envid`. Both are judged by exactly what
judges SMTP's parameters (kubemta_common.dsn_parameters), so the API accepts what RCPT and
MAIL accept: NOTIFY is `never` alone or any of success, failure, delay; RET is full or hdrs;
ENVID is printable ASCII of at most 100 characters once written as xtext (§4.4), given here
as the text itself, not as xtext. NOTIFY applies to every recipient of the message; the API
has no ORCPT: the recipients are the ones the caller named.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import DsnParameterError, envid_value, parse_envid, parse_recipient_dsn, parse_ret
from kubemta_ingress.api_message_fields import InvalidMessage

NOTIFY_VALUES = ("success", "failure", "delay", "never")
RET_VALUES = ("full", "hdrs")
ENVID_PROBLEM = "an envid is printable ASCII of at most 100 characters written as xtext (RFC 3461 section 4.4)"
NOTIFY_PROBLEM = "notify is `never` alone, or any of `success`, `failure`, `delay` (RFC 3461 section 4.1)"
RET_PROBLEM = "ret is `full` or `hdrs` (RFC 3461 section 4.3)"


@dataclass(frozen=True, slots=True)
class MessageDsn:
    """What a request asked for, as the bus carries it (AcceptedMessage.recipient_dsn, .ret, .envid)."""

    notify: message_pb2.RecipientDsn | None = None
    """NOTIFY for every recipient; None: not given (the default applies: failure and delay)."""
    ret: "message_pb2.DsnRet.ValueType" = message_pb2.DSN_RET_UNSPECIFIED
    envid: str = ""

    def recipient_dsn(self, recipients: Sequence[str]) -> dict[str, message_pb2.RecipientDsn]:
        """Submission.recipient_dsn for `recipients`: the same NOTIFY for each, none when not given."""
        if self.notify is None:
            return {}
        return {recipient: self.notify for recipient in recipients}


def check_notify(values: Sequence[str]) -> message_pb2.RecipientDsn:
    """NOTIFY's values (any case) as RCPT's NOTIFY parameter would give them; ValueError naming the rule."""
    try:
        dsn = parse_recipient_dsn(",".join(values), None)
    except DsnParameterError:
        raise ValueError(NOTIFY_PROBLEM) from None
    assert dsn is not None
    return dsn


def check_ret(value: str) -> "message_pb2.DsnRet.ValueType":
    """RET (any case); ValueError naming the rule."""
    try:
        return parse_ret(value)
    except DsnParameterError:
        raise ValueError(RET_PROBLEM) from None


def check_envid(value: str) -> str:
    """An ENVID as text: it must come back the same from xtext within 100 characters; ValueError otherwise."""
    encoded = envid_value(value)
    try:
        if encoded is None or parse_envid(encoded) != value:
            raise ValueError(ENVID_PROBLEM)
    except DsnParameterError:
        raise ValueError(ENVID_PROBLEM) from None
    return value


def query_dsn(notify: str | None, ret: str | None, envid: str | None) -> MessageDsn:
    """The query parameters of a raw message; InvalidMessage (422) naming the one at fault."""
    try:
        checked_notify = check_notify(notify.split(",")) if notify is not None else None
    except ValueError as exc:
        raise InvalidMessage("notify", str(exc), source="query") from None
    try:
        checked_ret = check_ret(ret) if ret is not None else message_pb2.DSN_RET_UNSPECIFIED
    except ValueError as exc:
        raise InvalidMessage("ret", str(exc), source="query") from None
    try:
        checked_envid = check_envid(envid) if envid is not None else ""
    except ValueError as exc:
        raise InvalidMessage("envid", str(exc), source="query") from None
    return MessageDsn(checked_notify, checked_ret, checked_envid)
