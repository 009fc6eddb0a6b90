"""A ready-made message for `POST /v1/messages` (`Content-Type: message/rfc822`): checked, lightly repaired, and its
envelope found.

The envelope comes from the query (`?from=...&to=...&to=...`, passed in by the route) or, when absent,
from the message itself as `sendmail -t` reads it: the sender from Sender: (or the single
mailbox of From:), the recipients from every To:, Cc: and Bcc: field (groups included).
Bcc: fields are always removed from the content, as Postfix' cleanup(8) does: a Bcc: that
reached a recipient would tell them who else got the message.

Repairs, because application libraries often get them wrong and they change no meaning:
bare LF line endings become CRLF (content.py refuses them in SMTP DATA; here the caller
obviously sent a file), a missing final CRLF is added, and a header section that ends
without its empty line gets one (as submission_headers.py does). Refused, with the line
named: a bare CR (which line end was meant cannot be known), NUL, a line over 998 octets
(RFC 5322 section 2.1.1: the sender has to encode it), a message that does not start with
a header field, no From: field, no recipients. Date: and Message-ID: are not added here: the
ingress' MSA step (submission_headers.with_missing_headers) completes them as for any
trusted submission.

The header section is read line by line on CRLF (sender_identity.header_fields), not by
the email package's message parser (which stops at the first line that is not a header
field): the recipients are read from exactly the lines a next hop sees as fields.
"""

import email.errors
from email.headerregistry import AddressHeader, BaseHeader

from kubemta_ingress.api_message import ComposedMessage, dedupe_recipients
from kubemta_ingress.api_message_model import DEFAULT_MAX_RECIPIENTS, InvalidMessage
from kubemta_ingress.header_classes import READER
from kubemta_ingress.message_id import message_id
from kubemta_ingress.policy import check_address
from kubemta_ingress.sender_identity import header_fields, mailboxes
from kubemta_ingress.submission_headers import header_section_end

CRLF = b"\r\n"
MAX_LINE = 998  # RFC 5322 section 2.1.1, CRLF not counted
RECIPIENT_FIELDS = (b"to", b"cc", b"bcc")
_WSP = (b" ", b"\t")


def parse_raw(
    body: bytes,
    *,
    envelope_from: str | None,
    recipients: list[str] | None,
    max_recipients: int = DEFAULT_MAX_RECIPIENTS,
) -> ComposedMessage:
    """The message in `body` with its envelope: `envelope_from` and `recipients` from the query, or from the
    message's headers where None. Raises InvalidMessage naming the line, header or query parameter at fault."""
    content = _with_separator(_crlf_lines(body))
    sender = _sender(content) if envelope_from is None else _query_address("from", envelope_from)
    if recipients is None:
        found = _header_recipients(content)
        if not found:
            raise InvalidMessage("", "no recipients: no address in To:, Cc: or Bcc:, and no `to` query parameter")
    else:
        found = [_query_address(f"to.{index}", address) for index, address in enumerate(recipients)]
        if not found:
            raise InvalidMessage("to", "no recipients", source="query")
    if len(found) > max_recipients:
        raise InvalidMessage("", f"{len(found)} recipients; at most {max_recipients} are allowed")
    content = without_fields(content, b"bcc")
    head = content[: header_section_end(content)[0]]
    smtputf8 = not head.isascii() or not sender.isascii() or not all(address.isascii() for address in found)
    return ComposedMessage(sender, dedupe_recipients(found), content, smtputf8, message_id(content))


def _crlf_lines(body: bytes) -> bytes:
    """`body` with CRLF line endings only and a final CRLF; refused with a bare CR, a NUL or a long line."""
    if b"\0" in body:
        raise InvalidMessage(
            "", f"line {_line_of(body, body.index(b'\0'))} holds a NUL character (RFC 5322 section 2.3)"
        )
    text = body.replace(CRLF, b"\n")
    if b"\r" in text:
        line = _line_of(text, text.index(b"\r"))
        raise InvalidMessage("", f"line {line} holds a CR that is not followed by LF (RFC 5322 section 2.3)")
    for number, text_line in enumerate(text.split(b"\n"), start=1):
        if len(text_line) > MAX_LINE:
            raise InvalidMessage(
                "",
                f"line {number} is {len(text_line)} octets long; RFC 5322 section 2.1.1 allows at most {MAX_LINE} "
                "(encode long lines as quoted-printable or base64)",
            )
    content = text.replace(b"\n", CRLF)
    return content if content.endswith(CRLF) or not content else content + CRLF


def _line_of(text: bytes, offset: int) -> int:
    return text.count(b"\n", 0, offset) + 1


def _with_separator(content: bytes) -> bytes:
    """`content` with the empty line after its header section; refused when it has no header section."""
    end, has_separator = header_section_end(content)
    if end == 0:
        raise InvalidMessage("", "the message does not start with a header field (RFC 5322 section 2.1)")
    if has_separator:
        return content
    head = content[:end]
    return head + CRLF + content[end:]  # `head` ends with CRLF: every line does


def _sender(content: bytes) -> str:
    """The envelope sender as `sendmail -t` takes it: Sender:, else the one mailbox of From:."""
    senders = header_fields(content, b"sender")
    authors = header_fields(content, b"from")
    if not authors:
        raise InvalidMessage("", "the message has no From: field (RFC 5322 section 3.6)")
    name, fields = ("Sender", senders) if senders else ("From", authors)
    if len(fields) > 1:
        raise InvalidMessage("", f"the message has {len(fields)} {name}: fields; RFC 5322 section 3.6 allows one")
    found = mailboxes(fields[0])
    if found is None:
        raise InvalidMessage("", f"{name}: does not parse as mail addresses (RFC 5322 section 3.4)")
    if len(found) != 1:
        raise InvalidMessage(
            "",
            f"{name}: holds {len(found)} mailboxes: give the envelope sender as the `from` query parameter",
        )
    return found[0]


def _query_address(field: str, address: str) -> str:
    if check_address(address, smtputf8=True) is not None:
        raise InvalidMessage(field, f"not a valid mail address: {address!r}", source="query")
    return address


def _header_recipients(content: bytes) -> list[str]:
    """The addresses of every To:, Cc: and Bcc: field, in that order (members of groups included)."""
    found: list[str] = []
    for name in RECIPIENT_FIELDS:
        for value in header_fields(content, name):
            found.extend(_addresses(name.decode("ascii").capitalize(), value))
    return found


def _addresses(name: str, value: bytes) -> list[str]:
    """The addresses of an address-list header value; InvalidMessage when it does not parse cleanly."""
    try:
        header = READER.header_factory(name, value.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidMessage("", f"{name}: is not UTF-8 (RFC 6532)") from None
    except (email.errors.HeaderParseError, ValueError, IndexError, TypeError):
        header = None
    defects = [] if header is None else getattr(header, "defects", ())
    bad = [d for d in defects if not isinstance(d, email.errors.NonASCIILocalPartDefect)]
    if not isinstance(header, AddressHeader) or not isinstance(header, BaseHeader) or bad:
        raise InvalidMessage("", f"{name}: does not parse as mail addresses (RFC 5322 section 3.4)")
    addresses = [address.addr_spec for address in header.addresses]
    for address in addresses:
        if "=?" in address or check_address(address, smtputf8=True) is not None:
            raise InvalidMessage("", f"{name}: {address!r} is not a valid mail address")
    return addresses


def without_fields(content: bytes, name: bytes) -> bytes:
    """`content` without the header fields called `name` (lower case), continuation lines included."""
    end, _ = header_section_end(content)
    kept: list[bytes] = []
    dropping = False
    for line in content[:end].split(CRLF)[:-1]:  # the section ends with CRLF: the last piece is empty
        if line[:1] in _WSP:
            if not dropping:
                kept.append(line + CRLF)
            continue
        field_name, colon, _ = line.partition(b":")
        dropping = bool(colon) and field_name.rstrip(b" \t").lower() == name
        if not dropping:
            kept.append(line + CRLF)
    return b"".join(kept) + content[end:]
