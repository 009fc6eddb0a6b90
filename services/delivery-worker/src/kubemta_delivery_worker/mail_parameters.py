"""What a mail transaction announces in MAIL FROM, from the server's extensions and the message.

Shared by SMTP and LMTP (RFC 2033 §4.1: LMTP uses the ESMTP extensions as they are):
SIZE (RFC 1870 §6), BODY=8BITMIME (RFC 6152 §2) and SMTPUTF8 (RFC 6531 §3.4). A
message or recipient that needs SMTPUTF8 cannot go to a server without it.
"""

from collections.abc import Container, Sequence
from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import message_data


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
