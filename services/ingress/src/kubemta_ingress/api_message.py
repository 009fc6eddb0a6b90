"""The message of `POST /v1/messages`: a valid `MessageRequest` composed into RFC 5322 bytes and an envelope.

Pure code, no I/O: the route (api.py) authenticates, calls `compose` (JSON bodies) or
`api_message_raw.parse_raw` (`message/rfc822` bodies) and queues the `ComposedMessage`.

The MIME structure is the standard library's (`email.message.EmailMessage`), never written
by hand: text and html become multipart/alternative, inline parts (a `content_id`) make the
html multipart/related, attachments make the whole multipart/mixed. Bodies are always
7bit-clean (quoted-printable or base64 where needed), so no line passes 998 octets and no
next hop needs 8BITMIME; headers are folded by the email package, non-ASCII text in them as
RFC 2047 encoded words, or as raw UTF-8 when the message is SMTPUTF8 anyway (a non-ASCII
address, RFC 6532). Extra headers that are ASCII (or any extra header of an SMTPUTF8
message) are written exactly as given, unfolded (the model keeps them within one 998-octet
line): folding would turn a long URL of List-Unsubscribe into encoded words. Address
headers are folded one mailbox at a time and joined after the commas, and each mailbox
must read back as written (`_set_addresses`: folding a whole list loses addresses on
CPython 3.12).

Header injection is closed twice. The model refuses control characters in all header
text; and every header written here is folded and checked on its own before the message
is made, as CPython 3.12.5+ does (`verify_generated_headers`, CVE-2024-6923): the email
package decodes encoded words in the values it is given, so `=?utf-8?q?x=0D=0ABcc:_y?=`
in a subject, display name or file name would otherwise become a real line break on
older Pythons. Such a value is refused, naming its field. The finished bytes then pass
the same content check as SMTP DATA (content.py: CRLF only, no NUL, no long line).

Bcc recipients are in the envelope only. Recipients are deduplicated as RCPT would be:
local part case-insensitive, domain compared in its A-label form, first spelling kept.
"""

import email.errors
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, AddressHeader, BaseHeader
from email.message import EmailMessage, MIMEPart
from email.policy import SMTP, SMTPUTF8, EmailPolicy
from email.utils import format_datetime

from kubemta_ingress.api_message_model import (
    Attachment,
    InvalidMessage,
    Mailbox,
    MessageRequest,
    header_text_problem,
)
from kubemta_ingress.content import content_problem
from kubemta_ingress.header_classes import HEADER_CLASSES, READER
from kubemta_ingress.policy import dequote, normalize_domain, split_address

__all__ = ["ComposedMessage", "InvalidMessage", "compose", "dedupe_recipients"]

POLICY: "EmailPolicy[EmailMessage]" = SMTP.clone(cte_type="7bit", refold_source="none", header_factory=HEADER_CLASSES)
POLICY_UTF8: "EmailPolicy[EmailMessage]" = SMTPUTF8.clone(
    cte_type="7bit", refold_source="none", header_factory=HEADER_CLASSES
)
MAX_LINE = 998  # RFC 5322 section 2.1.1

_BROKEN_FOLD = re.compile(r"\r\n(?![ \t])|\r(?!\n)|(?<!\r)\n")  # a line break not followed by white space
_MSG_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>\Z")
_HEADER_ERRORS = (ValueError, TypeError, IndexError, email.errors.HeaderParseError)
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    """A message ready to queue: the envelope and the content (CRLF line endings)."""

    sender: str
    """The envelope sender (MAIL FROM)."""
    recipients: list[str]
    """The envelope recipients (RCPT TO), deduplicated, in request order."""
    content: bytes
    smtputf8: bool
    """True when an address is not ASCII: the message needs SMTPUTF8 (RFC 6531) from every hop."""
    message_id: str
    """The Message-ID field's value, <id-left@id-right>; "" for a raw message without one."""


def compose(request: MessageRequest, *, now: datetime, message_id: str) -> ComposedMessage:
    """The message `request` asks for, dated `now` (timezone-aware), with `message_id` (`<left@right>`)
    unless the request names its own. Raises InvalidMessage for what only composing can find."""
    if now.utcoffset() is None:
        raise ValueError("compose needs a timezone-aware `now`")
    if not _MSG_ID.match(message_id):
        raise ValueError(f"compose needs a message id <id-left@id-right>, not {message_id!r}")
    sender = request.envelope_from or request.from_.address
    mailboxes = [request.from_, *request.recipients(), *([request.reply_to] if request.reply_to else [])]
    smtputf8 = not sender.isascii() or not all(mailbox.address.isascii() for mailbox in mailboxes)
    policy = POLICY_UTF8 if smtputf8 else POLICY
    msg = EmailMessage(policy=policy)
    _set_addresses(msg, policy, "from", "From", [request.from_])
    _set_addresses(msg, policy, "to", "To", request.to)
    _set_addresses(msg, policy, "cc", "Cc", request.cc)
    _set_addresses(msg, policy, "reply_to", "Reply-To", [request.reply_to] if request.reply_to is not None else [])
    if request.subject is not None:
        _set(msg, "subject", "Subject", request.subject)
    _set(msg, "", "Date", format_datetime(now))
    message_id = request.message_id or message_id
    _set(msg, "message_id", "Message-ID", message_id)
    for name, value in request.headers.items():
        if value.isascii() or smtputf8:
            _check_decoded(policy, f"headers.{name}", name, value)
            msg.set_raw(name, value)  # exactly as given; the model checked the text and the line length
        else:
            _set(msg, f"headers.{name}", name, value)
    _add_body(msg, request)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package gives every part one; only the message needs it
    content = msg.as_bytes()
    problem = content_problem(content)
    if problem is not None:  # a bug of the email package, never the caller's text: still never queued
        raise InvalidMessage("", f"the composed message breaks RFC 5322 ({problem.value})")
    recipients = dedupe_recipients(mailbox.address for mailbox in request.recipients())
    return ComposedMessage(sender, recipients, content, smtputf8, message_id)


def dedupe_recipients(addresses: Iterable[str]) -> list[str]:
    """`addresses` without repeats as RCPT sees them (local part case-insensitive, domain normalised)."""
    seen: set[str] = set()
    unique = []
    for address in addresses:
        local, domain = split_address(address)
        key = f"{local.lower()}@{normalize_domain(domain)}"
        if key not in seen:
            seen.add(key)
            unique.append(address)
    return unique


def _address(mailbox: Mailbox) -> Address:
    local, domain = split_address(mailbox.address)
    return Address(display_name=mailbox.name or "", username=dequote(local), domain=domain)


def _set_addresses(
    msg: EmailMessage, policy: "EmailPolicy[EmailMessage]", field: str, name: str, mailboxes: list[Mailbox]
) -> None:
    """An address header: each mailbox encoded and folded by the email package on its own, joined by ",CRLF SP".

    Folding a whole address list trips a bug of the email package (CPython 3.12): a fold right after an encoded
    display name can put the separating comma into an encoded word, and the next address is lost to readers.
    """
    if not mailboxes:
        return
    values = []
    for index, mailbox in enumerate(mailboxes):
        if _plain(policy, name, mailbox):
            values.append(mailbox.address)
            continue
        where = field if field in ("from", "reply_to") else f"{field}.{index}"
        try:
            folded = policy.fold(name, policy.header_factory(name, _address(mailbox)))
        except _HEADER_ERRORS as exc:
            raise InvalidMessage(where, f"cannot be written as a {name}: header: {exc}") from None
        problem = _fold_problem(folded)
        if problem is not None:
            raise InvalidMessage(where, f"{name}: {problem}")
        value = folded[len(name) + 1 : -2].lstrip(" \t\r\n")  # "To: v" or, for a long first word, "To:\r\n v"
        if not _reads_back(name, value, mailbox):
            raise InvalidMessage(where, f"{name}: this display name cannot be written so that it reads back the same")
        values.append(value)
    msg.set_raw(name, ",\r\n ".join(values))  # RFC 5322 section 3.4 address-list, folded after each comma


def _plain(policy: "EmailPolicy[EmailMessage]", name: str, mailbox: Mailbox) -> bool:
    """True for a mailbox the email package writes as its address alone, on one line: no display name, a local part
    and a domain of letters, digits and `.`, `_`, `+`, `-` (no quoting, no encoded word, no `=?`), and a field line
    within the policy's `max_line_length` (78), so nothing is folded. Most apps' recipients are; they skip the
    package's write, fold and read back, 0.1 ms each (the fuzz test holds this equal to the package's result)."""
    limit = policy.max_line_length
    return (
        (limit is None or len(name) + 2 + len(mailbox.address) <= limit)
        and not mailbox.name
        and bool(_PLAIN_ADDRESS.match(mailbox.address))
    )


def _reads_back(name: str, value: str, mailbox: Mailbox) -> bool:
    """True when `value` parses as exactly `mailbox`, the display name compared without white space: a long name
    becomes adjacent encoded words, between which Python's parser (3.12) keeps a space RFC 2047 section 6.2 drops."""
    try:
        header = READER.header_factory(name, value.replace("\r\n", ""))
    except _HEADER_ERRORS:
        return False
    if not isinstance(header, AddressHeader) or not isinstance(header, BaseHeader):
        return False
    if any(not isinstance(defect, email.errors.NonASCIILocalPartDefect) for defect in header.defects):
        return False
    written = _address(mailbox)
    if [address.addr_spec for address in header.addresses] != [written.addr_spec]:
        return False
    name_read = header.addresses[0].display_name
    return "=?" in written.display_name or "".join(name_read.split()) == "".join(written.display_name.split())


def _set(part: MIMEPart, field: str, name: str, value: object) -> None:
    """Set header `name` of `part` and check it folds into sound lines; InvalidMessage names `field` if not."""
    try:
        part[name] = value
        _check_header(part, name, field)
    except _HEADER_ERRORS as exc:
        del part[name]
        raise InvalidMessage(field, f"cannot be written as a {name}: header: {exc}") from None


def _check_decoded(policy: "EmailPolicy[EmailMessage]", field: str, name: str, value: str) -> None:
    """Refuse a value written raw whose encoded words decode to a line break or control: a reader that parses
    and writes the message again (an older Python, a list server) would make them real."""
    try:
        problem = _fold_problem(policy.header_factory(name, value).fold(policy=policy))
    except _HEADER_ERRORS as exc:
        raise InvalidMessage(field, f"cannot be written as a {name}: header: {exc}") from None
    if problem is not None and not problem.startswith("it cannot be folded"):
        raise InvalidMessage(field, f"{name}: {problem}")


def _check_header(part: MIMEPart, name: str, field: str) -> None:
    """Every `name` field of `part` folds into sound lines, else it is removed and InvalidMessage names `field`.

    Only the fields named `name` are read: reading every field of the part (`items()`) parsed each address field
    written raw again for every field added after it, quadratic in a request's headers and recipients (50 extra
    headers and 1,000 recipients took 10 s of the event loop)."""
    for header in part.get_all(name, ()):
        header_name = getattr(header, "name", name)
        folded = part.policy.fold(header_name, header)
        problem = _fold_problem(folded)
        if problem is not None:
            del part[name]
            raise InvalidMessage(field, f"{header_name}: {problem}")


def _fold_problem(folded: str) -> str | None:
    """Why a folded header (with its CRLF) is not sound, or None."""
    body = folded.removesuffix("\r\n")
    if _BROKEN_FOLD.search(body):
        return "an encoded word (=?charset?...?=) in it decodes to a line break"
    text_problem = header_text_problem(body.replace("\r\n", ""))
    if text_problem is not None:
        return f"once its encoded words (=?charset?...?=) are decoded, it {text_problem}"
    if any(len(line.encode("utf-8", "surrogateescape")) > MAX_LINE for line in body.split("\r\n")):
        return f"it cannot be folded into lines of at most {MAX_LINE} octets"
    return None


def _add_body(msg: EmailMessage, request: MessageRequest) -> None:
    """text and/or html, inline parts under the html, attachments: the email package builds the multiparts."""
    html_part: MIMEPart = msg
    if request.text is not None:
        msg.set_content(request.text, subtype="plain")
    if request.html is not None and request.text is not None:
        msg.add_alternative(request.html, subtype="html")
        html_part = _last_part(msg)
    elif request.html is not None:
        msg.set_content(request.html, subtype="html")
    for index, attachment in enumerate(request.attachments):
        if attachment.content_id is None:
            continue
        cid = f"<{attachment.content_id}>"
        html_part.add_related(
            attachment.content, *_types(attachment), cid=cid, disposition="inline", filename=attachment.filename
        )
        _check_part(_last_part(html_part), f"attachments.{index}.filename")
    for index, attachment in enumerate(request.attachments):
        if attachment.content_id is not None:
            continue
        msg.add_attachment(attachment.content, *_types(attachment), filename=attachment.filename)
        _check_part(_last_part(msg), f"attachments.{index}.filename")


def _types(attachment: Attachment) -> tuple[str, str]:
    maintype, _, subtype = attachment.content_type.partition("/")
    return maintype, subtype


def _check_part(part: MIMEPart, field: str) -> None:
    for name in {name.lower() for name in part.keys()}:
        _check_header(part, name, field)


def _last_part(part: MIMEPart) -> MIMEPart:
    """The part the email package added last to the multipart `part`."""
    *_, last = part.iter_parts()
    return last
