"""What a mail transaction announces in MAIL FROM and RCPT TO, from the server's extensions and the job.

Shared by SMTP and LMTP (RFC 2033 §4.1: LMTP uses the ESMTP extensions as they are):
SIZE (RFC 1870 §6), BODY=8BITMIME (RFC 6152 §2) and SMTPUTF8 (RFC 6531 §3.4). A
message or recipient that needs SMTPUTF8 cannot go to a server without it.

The client's DSN parameters (RFC 3461) go on to a server that offered DSN, and to no other
(§5.2, §6: a parameter the server did not announce would be refused): RET and ENVID on MAIL
FROM, NOTIFY and ORCPT on the RCPT TO of each recipient that gave them. They come from the
job as decoded values (an outsider wrote them first), so each is written again with
kubemta_common.dsn_parameters and kept only when it reads back as the same value with that
module's parser: a value that cannot be written faithfully (a non-ASCII ENVID, an ORCPT over
500 characters, an addr-type that is no atom) is dropped, never written as it is.
"""

import logging
import re
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_common import dsn_parameters
from kubemta_common.logs import sanitize
from kubemta_delivery_worker import message_data

logger = logging.getLogger(__name__)

DSN = "dsn"
"""RFC 3461 §4: the EHLO (LHLO) keyword of the DSN extension (aiosmtplib keeps extension names in lower case)."""

_ESMTP_VALUE = re.compile(r"[!-<>-~]+")
"""RFC 5321 §4.1.2 esmtp-value: %d33-60 / %d62-126, so no space, control, "=" or non-ASCII character."""


@dataclass(frozen=True, slots=True)
class Smtputf8Screen:
    """Recipients to send to, those refused for want of SMTPUTF8, and whether to say SMTPUTF8."""

    send: list[str]
    refused: list[str]
    smtputf8: bool


def screen_smtputf8(job: message_pb2.DeliveryJob, recipients: Sequence[str], offered: bool) -> Smtputf8Screen:
    """RFC 6531 §3.4: the whole message needs SMTPUTF8 when flagged or when the sender is not ASCII;
    otherwise only the non-ASCII recipients do."""
    whole_message = job.smtputf8 or not job.sender.isascii()
    non_ascii = [rcpt for rcpt in recipients if not rcpt.isascii()]
    if not (whole_message or non_ascii):
        return Smtputf8Screen(list(recipients), [], smtputf8=False)
    if offered:
        return Smtputf8Screen(list(recipients), [], smtputf8=True)
    refused = list(recipients) if whole_message else non_ascii
    return Smtputf8Screen([rcpt for rcpt in recipients if rcpt not in refused], refused, smtputf8=False)


def mail_from_parameters(extensions: Container[str], content: bytes, smtputf8: bool) -> list[str]:
    """The MAIL FROM parameters for `content` (CRLF-normalized) given the server's lower-case extension names."""
    parameters: list[str] = []
    if "size" in extensions:
        parameters.append(f"SIZE={len(content)}")  # RFC 1870 §6
    if message_data.has_8bit(content) and "8bitmime" in extensions:
        parameters.append("BODY=8BITMIME")  # RFC 6152 §2
    if smtputf8:
        parameters.append("SMTPUTF8")  # RFC 6531 §3.4
    return parameters


def _checked(name: str, value: str | None, reads_back: Callable[[str], bool], *, given: bool, whose: str) -> list[str]:
    """`NAME=value` when `value` is an esmtp-value that `reads_back` as what the job holds; [] otherwise (logged
    when the client `given` one: the next hop then knows less than the client told us)."""
    try:
        faithful = value is not None and _ESMTP_VALUE.fullmatch(value) is not None and reads_back(value)
    except dsn_parameters.DsnParameterError:
        faithful = False
    if value is None or not faithful:
        if given:
            logger.warning("DSN parameter %s of %s not passed on: it cannot be written as RFC 3461 asks", name, whose)
        return []
    return [f"{name}={value}"]


def dsn_mail_parameters(job: message_pb2.DeliveryJob, offered: bool) -> list[str]:
    """RET (RFC 3461 §4.3) and ENVID (§4.4) for MAIL FROM to a server that `offered` DSN; those the client gave."""
    if not offered:
        return []
    ret = _checked(
        "RET",
        dsn_parameters.ret_value(job.ret),
        lambda value: dsn_parameters.parse_ret(value) == job.ret,
        given=job.ret != message_pb2.DSN_RET_UNSPECIFIED,
        whose="MAIL FROM",
    )
    envid = _checked(
        "ENVID",
        dsn_parameters.envid_value(job.envid),
        lambda value: dsn_parameters.parse_envid(value) == job.envid,
        given=bool(job.envid),
        whose="MAIL FROM",
    )
    return ret + envid


def _same_orcpt(written: message_pb2.RecipientDsn | None, stored: message_pb2.RecipientDsn) -> bool:
    return written is not None and (written.orcpt_type, written.orcpt_address) == (
        stored.orcpt_type.lower(),
        stored.orcpt_address,
    )


def dsn_rcpt_parameters(job: message_pb2.DeliveryJob, recipient: str, offered: bool) -> list[str]:
    """NOTIFY (RFC 3461 §4.1) and ORCPT (§4.2) for `recipient`'s RCPT TO to a server that `offered` DSN;
    those the client gave for it (job.recipient_dsn), nothing for a recipient that gave none."""
    stored = dsn_parameters.recipient_dsn(job, recipient)
    if not offered or stored is None:
        return []
    whose = f"<{sanitize(recipient)}>"
    notify = _checked(
        "NOTIFY",
        dsn_parameters.notify_value(stored),
        lambda value: dsn_parameters.notify_value(dsn_parameters.parse_recipient_dsn(value, None)) == value,
        given=stored.notify_given,
        whose=whose,
    )
    orcpt = _checked(
        "ORCPT",
        dsn_parameters.orcpt_value(stored),
        lambda value: _same_orcpt(dsn_parameters.parse_recipient_dsn(None, value), stored),
        given=bool(stored.orcpt_address),
        whose=whose,
    )
    return notify + orcpt
