"""The content a server gets when it does not offer 8BITMIME (RFC 6152 §3), for SMTP and LMTP alike.

RFC 6152 §3: 8-bit content must not go to a server that did not announce 8BITMIME; the
client converts it to 7 bit or returns it as undeliverable. Like Postfix ("8BITMIME
conversion", smtp_proto.c), the worker converts MIME content (kubemta_common.mime_7bit:
quoted-printable or base64 for the 8-bit leaf parts, every other byte unchanged); what
cannot be converted is bounced with 5.6.3 for every recipient of the transaction, without
MAIL FROM (RFC 3463 §3.6: conversion required but not supported). A server that offers
8BITMIME, and 7-bit content, get the message exactly as it is.

DKIM: mail kubemta signs was made 7-bit by the signer before signing (the queue-manager's
dkim_signer.py, RFC 6376 §5.3), so the worker never has to touch it and its signature
verifies as delivered; when it could not be made 7-bit there, it cannot here either and
bounces unchanged. Mail signed by someone else (a third party's DKIM-Signature on relayed
mail) is converted like any other: delivery first, as Postfix does; its body hash then no
longer matches, which the receiver, a server that cannot take 8-bit mail, judges for itself.
"""

import asyncio
import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_common.mime_7bit import Unconvertible, to_7bit
from kubemta_delivery_worker import message_data
from kubemta_delivery_worker.replies import local_result

logger = logging.getLogger(__name__)

STATUS_CONVERSION_NOT_SUPPORTED = "5.6.3"
"""RFC 3463 §3.6: X.6.3 conversion required but not supported."""
EIGHT_BIT_MIME = "8bitmime"
SMTPUTF8 = "smtputf8"


@dataclass(frozen=True, slots=True)
class ContentForServer:
    """The content to send, or (`refusal` set) the diagnostic of a 5.6.3 bounce for every recipient."""

    content: bytes
    refusal: str | None = None
    converted: bool = False

    def bounces(self, recipients: Iterable[str], remote_mta: str) -> dict[str, message_pb2.RecipientResult]:
        """The 5.6.3 result of each recipient when the content cannot go to this server; {} when it can."""
        if self.refusal is None:
            return {}
        return {
            rcpt: local_result(
                rcpt,
                message_pb2.OUTCOME_PERMANENT,
                STATUS_CONVERSION_NOT_SUPPORTED,
                self.refusal,
                remote_mta=remote_mta,
            )
            for rcpt in recipients
        }


async def content_for_server(content: bytes, extensions: Container[str], label: str) -> ContentForServer:
    """`content` (CRLF-normalized) as the server with lower-case EHLO/LHLO `extensions` may take it.

    A conversion costs CPU in proportion to the message (a second or more for a large or hostile one), so it runs
    in a thread: the event loop keeps serving the worker's other deliveries.
    """
    if EIGHT_BIT_MIME in extensions or not message_data.has_8bit(content):
        return ContentForServer(content)
    # 8-bit header fields may go as they are only where SMTPUTF8 carries them (RFC 6531 §3.2)
    return await asyncio.to_thread(_convert, content, SMTPUTF8 in extensions, label)  # copies the log context


def _convert(content: bytes, allow_8bit_headers: bool, label: str) -> ContentForServer:
    result = to_7bit(content, allow_8bit_headers=allow_8bit_headers)
    if isinstance(result, Unconvertible):
        logger.warning(
            "host %s does not offer 8BITMIME and the message cannot be made 7-bit: %s",
            label,
            result.reason,
            extra={"host": label},
        )
        diagnostic = f"host {label} does not support 8BITMIME, and conversion to 7 bit is not possible: {result.reason}"
        return ContentForServer(content, refusal=diagnostic)
    if result is content:  # its only 8-bit octets are in header fields SMTPUTF8 carries
        return ContentForServer(content)
    logger.info(
        "host %s does not offer 8BITMIME: 8-bit MIME parts converted to 7 bit (%d -> %d octets)",
        label,
        len(content),
        len(result),
        extra={"host": label},
    )
    return ContentForServer(result, converted=True)
