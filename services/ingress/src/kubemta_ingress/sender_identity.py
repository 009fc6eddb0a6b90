"""Who may send as whom: an authenticated user's envelope sender and author headers.

An authenticated user may only use senders inside its identities (users.py): the
envelope sender at MAIL (`553 5.7.1 Sender address rejected: not owned by user
<name>`, as Postfix' `reject_sender_login_mismatch`), and every address in the
message's author headers at DATA (`550 5.7.1`). The null sender `<>` is refused for
authenticated users: it is for bounces (RFC 5321 section 4.5.5), which a submitting
user does not send. Clients relaying by network (`KUBEMTA_RELAY_NETWORKS`) are not
restricted this way.

Author headers (RFC 5322 section 3.6.2), kept simple:
- exactly one `From:` field (RFC 5322 section 3.6 allows one; a second one is how
  spoofed authors slip past checks that read the first while the reader's mail
  program shows the other): none or several are refused;
- its mailbox-list must parse cleanly (no defects, no group syntax, no encoded
  words inside an address) and every mailbox in it must be owned;
- a `Sender:` field is optional; when present there must be one, holding one owned
  mailbox. `Sender:` is not required when `From:` has several mailboxes (RFC 5322
  asks for it, but refusing such mail adds nothing: all those mailboxes are owned).

The header section is scanned here, not with the email package's message parser,
so that a malformed line cannot hide a later `From:` field (the parser stops at the
first line that is not a header; a mail program may read on).
"""

import email.errors
import enum
from dataclasses import dataclass
from email.headerregistry import AddressHeader, BaseHeader

from kubemta_ingress.header_classes import READER
from kubemta_ingress.policy import canonical_domain, check_address, split_address
from kubemta_ingress.users import Identity

FROM = b"from"
SENDER = b"sender"
_WSP = b" \t"


@dataclass(frozen=True, slots=True)
class AuthenticatedUser:
    """What a successful AUTH leaves on the session (`session.auth_data`)."""

    name: str
    identities: tuple[Identity, ...]

    def owns(self, address: str) -> bool:
        """True when `address` is inside one of the user's identities (domain and local part case-insensitive)."""
        local, domain = split_address(address)
        canonical = canonical_domain(domain)
        if not local or canonical is None:
            return False
        normal = f"{local.lower()}@{canonical}"
        return any(
            identity.domain == canonical and (identity.address is None or identity.address == normal)
            for identity in self.identities
        )


class HeaderProblem(enum.Enum):
    """Why a message's author headers are refused for an authenticated user."""

    NO_FROM = "no_from"
    MULTIPLE_FROM = "multiple_from"
    FROM_NOT_OWNED = "from_not_owned"
    MULTIPLE_SENDER = "multiple_sender"
    SENDER_NOT_OWNED = "sender_not_owned"


def header_fields(content: bytes, name: bytes) -> list[bytes]:
    """The unfolded values of every header field called `name` (case-insensitive) in `content`."""
    head = content.split(b"\r\n\r\n", 1)[0] if not content.startswith(b"\r\n") else b""
    fields: list[list[bytes]] = []
    current: list[bytes] | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        field_name, colon, value = line.partition(b":")
        if colon and field_name.rstrip(_WSP).lower() == name:  # RFC 5322 section 4.5.3 obs-optional WSP
            current = [value]
            fields.append(current)
        else:
            current = None
    return [b"".join(parts) for parts in fields]


def mailboxes(value: bytes) -> list[str] | None:
    """The addresses of a mailbox-list header value, or None when it does not parse cleanly."""
    try:
        text = value.decode("utf-8")
        header = READER.header_factory("From", text)
    except (UnicodeDecodeError, email.errors.HeaderParseError, ValueError, IndexError, TypeError):
        return None
    if not isinstance(header, AddressHeader) or not isinstance(header, BaseHeader):
        return None
    defects = [defect for defect in header.defects if not isinstance(defect, email.errors.NonASCIILocalPartDefect)]
    if defects or any(group.display_name is not None for group in header.groups):
        return None
    addresses = [address.addr_spec for address in header.addresses]
    if not addresses or any(
        "=?" in address or check_address(address, smtputf8=True) is not None for address in addresses
    ):
        return None
    return addresses


def author_problem(content: bytes, user: AuthenticatedUser) -> HeaderProblem | None:
    """None when the author headers of `content` are all owned by `user`, else the problem."""
    from_fields = header_fields(content, FROM)
    if not from_fields:
        return HeaderProblem.NO_FROM
    if len(from_fields) > 1:
        return HeaderProblem.MULTIPLE_FROM
    authors = mailboxes(from_fields[0])
    if authors is None or not all(user.owns(author) for author in authors):
        return HeaderProblem.FROM_NOT_OWNED
    sender_fields = header_fields(content, SENDER)
    if len(sender_fields) > 1:
        return HeaderProblem.MULTIPLE_SENDER
    if sender_fields:
        senders = mailboxes(sender_fields[0])
        if senders is None or len(senders) != 1 or not user.owns(senders[0]):
            return HeaderProblem.SENDER_NOT_OWNED
    return None
