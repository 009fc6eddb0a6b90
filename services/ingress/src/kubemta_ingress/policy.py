"""Who may send what: envelope address syntax and the relay decision at RCPT.

Mail for a local domain is accepted from anyone; mail for any other domain only
from clients in the relay networks (Postfix' `permit_mynetworks`,
`reject_unauth_destination`). Address syntax follows RFC 5321 section 4.1.2,
extended by RFC 6531 section 3.3 (UTF-8 mailboxes when the client asked for SMTPUTF8).
"""

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_DOMAIN_LENGTH = 255  # RFC 5321 section 4.5.3.1.2
MAX_LABEL_LENGTH = 63  # RFC 1035 section 2.3.4
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")  # RFC 5321 section 4.1.2 sub-domain
_IPV6_TAG = "ipv6:"  # RFC 5321 section 4.1.3 IPv6-address-literal


class AddressProblem(enum.Enum):
    """Why an envelope address is refused."""

    SYNTAX = "syntax"
    """Not local-part@domain, or a malformed domain or address literal."""
    NEEDS_SMTPUTF8 = "needs_smtputf8"
    """A non-ASCII address in a transaction without SMTPUTF8 (RFC 6531 section 3.5)."""


def normalize_domain(domain: str) -> str:
    """A domain in the form used for comparisons: lower case, no trailing dot, A-labels when possible."""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return domain


def domain_of(address: str) -> str:
    """The domain part of `local@domain`, normalised."""
    return normalize_domain(address.rpartition("@")[2])


def check_address(address: str, *, smtputf8: bool) -> AddressProblem | None:
    """None when `address` is a usable local-part@domain mailbox, else the problem."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by aiosmtpd as surrogate escapes
        return AddressProblem.SYNTAX
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(not ch.isprintable() for ch in address):
        return AddressProblem.SYNTAX
    if not _valid_domain(domain):
        return AddressProblem.SYNTAX
    if not address.isascii() and not smtputf8:
        return AddressProblem.NEEDS_SMTPUTF8
    return None


def _valid_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return _valid_address_literal(domain[1:-1])
    if len(domain.encode("utf-8")) > MAX_DOMAIN_LENGTH:
        return False
    for label in domain.split("."):
        if not label or len(label.encode("utf-8")) > MAX_LABEL_LENGTH:
            return False
        if label.isascii():
            if not _LDH_LABEL.match(label):
                return False
        elif not all(ch.isalnum() or ch == "-" for ch in label) or label.startswith("-") or label.endswith("-"):
            return False
    return True


def _valid_address_literal(literal: str) -> bool:
    try:
        if literal.lower().startswith(_IPV6_TAG):
            ipaddress.IPv6Address(literal[len(_IPV6_TAG) :])
        else:
            ipaddress.IPv4Address(literal)
    except ValueError:
        return False
    return True


def client_ip(peer: object) -> IPAddress | None:
    """The client's IP address from a transport's `peername` (IPv4-mapped IPv6 as IPv4)."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None
    try:
        address = ipaddress.ip_address(peer[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """The RCPT decision: local domains from anyone, other domains from relay networks only."""

    local_domains: frozenset[str]
    relay_networks: tuple[IPNetwork, ...]

    @classmethod
    def create(cls, local_domains: Iterable[str], relay_networks: Iterable[IPNetwork]) -> "RelayPolicy":
        """A policy with the domains normalised."""
        return cls(frozenset(normalize_domain(domain) for domain in local_domains), tuple(relay_networks))

    def is_local(self, domain: str) -> bool:
        """True when mail for `domain` ends here (case-insensitive, trailing dot ignored)."""
        return normalize_domain(domain) in self.local_domains

    def may_relay(self, client: IPAddress | None) -> bool:
        """True when `client` is in a relay network."""
        return client is not None and any(
            client.version == network.version and client in network for network in self.relay_networks
        )

    def accepts(self, recipient: str, client: IPAddress | None) -> bool:
        """True when mail from `client` to `recipient` may be accepted."""
        return self.is_local(domain_of(recipient)) or self.may_relay(client)
