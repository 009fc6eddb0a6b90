"""The DSN parameters (RFC 3461) of an SMTP transaction: taken out of MAIL and RCPT, checked, kept per envelope.

aiosmtpd upper-cases a command's parameters and refuses every one it does not know with
`555`. ENVID and ORCPT are xtext, whose case is part of the value (`ENVID=QQ314159abc`,
`ORCPT=rfc822;Bob@example.com`), so the session takes the DSN parameters out of the
command before aiosmtpd reads the rest (`take_parameters`, only after EHLO: after HELO a
command has no parameters at all) and gives them, as the client wrote them, to the handler's
hook behind the options aiosmtpd read. The handler reads them with `mail_parameters` and
`recipient_parameters` (kubemta_common.dsn_parameters does the grammar), before any other
check of the command, as Postfix does, with Postfix's replies (`501 5.5.4 Bad RET parameter
syntax`); a parameter given twice is refused the same way (Postfix' smtpd does so).

What was accepted lives on `DsnEnvelope`, aiosmtpd's per-transaction state: RSET, a new
EHLO and the end of DATA start a new envelope, and with it no DSN parameters.
"""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from aiosmtpd.smtp import Envelope

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import DsnParameterError, parse_envid, parse_recipient_dsn, parse_ret

MAIL_KEYWORDS = frozenset({"RET", "ENVID"})
"""RFC 3461 §4.3, §4.4: the DSN parameters of MAIL FROM."""
RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})
"""RFC 3461 §4.1, §4.2: the DSN parameters of RCPT TO."""


@dataclass(frozen=True, slots=True)
class MailDsn:
    """MAIL FROM's DSN parameters, decoded (AcceptedMessage.ret and .envid)."""

    ret: "message_pb2.DsnRet.ValueType" = message_pb2.DSN_RET_UNSPECIFIED
    envid: str = ""


class DsnEnvelope(Envelope):
    """aiosmtpd's envelope with the transaction's DSN parameters (the session creates these)."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn = MailDsn()
        self.recipient_dsn: dict[str, message_pb2.RecipientDsn] = {}
        """By recipient, exactly as it is in `rcpt_tos`; a recipient given no DSN parameter has no entry."""


def keyword(parameter: str) -> str:
    """The upper-case keyword of an ESMTP parameter (`ret=hdrs` -> `RET`; RFC 5321 §2.4: any case)."""
    return parameter.partition("=")[0].upper()


def take_parameters(parameters: str, keywords: Collection[str]) -> tuple[str, list[str]]:
    """`parameters` (a command's text after the address) without those named in `keywords`, and those, in
    the order and case the client wrote them."""
    rest: list[str] = []
    taken: list[str] = []
    for parameter in parameters.split():
        (taken if keyword(parameter) in keywords else rest).append(parameter)
    return " ".join(rest), taken


def _values(options: Sequence[str], keywords: Collection[str]) -> dict[str, str | bool]:
    """The values of the DSN parameters in `options` (True for one without "="), by keyword; DsnParameterError
    for a parameter given twice."""
    values: dict[str, str | bool] = {}
    for option in options:
        name = keyword(option)
        if name not in keywords:
            continue
        if name in values:
            raise DsnParameterError(f"501 5.5.4 Bad {name} parameter syntax")
        _, equals, value = option.partition("=")
        values[name] = value if equals else True
    return values


def mail_parameters(options: Sequence[str]) -> MailDsn:
    """RET and ENVID among MAIL FROM's `options`; DsnParameterError (its `reply`) when one is wrong."""
    values = _values(options, MAIL_KEYWORDS)
    # True (a keyword without a value) is refused by parse_* with the parameter's reply
    return MailDsn(parse_ret(values.get("RET")), parse_envid(values.get("ENVID")))


def recipient_parameters(options: Sequence[str], *, smtputf8: bool) -> message_pb2.RecipientDsn | None:
    """NOTIFY and ORCPT among RCPT TO's `options` (None: neither given); DsnParameterError when one is wrong.
    `smtputf8`: the transaction declared SMTPUTF8, so an ORCPT of type utf-8 may hold raw UTF-8 (RFC 6533 §3)."""
    values = _values(options, RCPT_KEYWORDS)
    return parse_recipient_dsn(values.get("NOTIFY"), values.get("ORCPT"), smtputf8=smtputf8)
