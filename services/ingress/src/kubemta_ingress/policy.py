"""Who may send what: envelope address syntax and the relay decision at RCPT.

Mail for a local domain is accepted from anyone; mail for any other domain only
from clients that are authenticated or in the relay networks (Postfix'
`permit_sasl_authenticated`, `permit_mynetworks`, `reject_unauth_destination`).
Address syntax follows RFC 5321 section 4.1.2, extended by RFC 6531 section 3.3
(UTF-8 mailboxes when the client asked for SMTPUTF8).

Address forms that have opened relays, and what the ingress makes of each when the
client may *not* relay (`554 5.7.1 <address>: Relay access denied` unless noted).
An address counts as local only when its whole form is unambiguous: a local domain
and no routing inside the local part. Nothing is ever rewritten: the address that
was judged is the address that is queued.

- Percent hack `user%other.org@example.com` (RFC 1123 section 5.2.16) and bang
  paths `other.org!user@example.com` (UUCP, RFC 976): a `%` or `!` in the local
  part is routing, so the address is not local -> 554 5.7.1. This is Postfix'
  `allow_untrusted_routing = no` (its default): sender-specified routing from
  untrusted clients is refused, never resolved (`allow_percent_hack`,
  `swap_bangpath` only matter for trusted clients, which may relay anyway).
- Quoted local parts `"user@other.org"@example.com`, `"user%other.org"@example.com`:
  judged after dequoting (Postfix' `resolve_dequoted_address = yes`): an `@`, `%`
  or `!` inside is routing -> 554 5.7.1. A quoted local part without routing
  characters (`"john smith"@example.com`) is an ordinary local mailbox.
- Backslash escapes: outside quotes they are not RFC 5321 syntax -> 501 5.1.3;
  inside quotes `\\x` means `x` and is judged as above.
- Source routes `<@example.com:user@other.org>`: RFC 5321 section 4.1.1.3 says
  servers SHOULD ignore them; aiosmtpd already drops the route, so the decision is
  made on `user@other.org` (here: 554 5.7.1), and `<@other.org:user@example.com>` is
  the local `user@example.com`.
- Address literals `user@[192.0.2.1]`: never local (Postfix only treats its own
  interface addresses as local, `resolve_numeric_domain`) -> 554 5.7.1.
- Trailing dot `user@example.com.`: not RFC 5321 `Domain` syntax; aiosmtpd's parser
  refuses it (501 5.1.3). The policy itself treats `example.com.` as `example.com`
  (Postfix strips the dot), so `user@other.org.` can never become local.
- Case: domains compare case-insensitively (RFC 4343): `USER@EXAMPLE.COM` is local.
- Unicode: a domain is compared in its A-label form (`bücher.example` and
  `xn--bcher-kva.example` are the same domain, RFC 5890). No Unicode mapping is
  applied: a label that IDNA mapping would change (fullwidth `ｃｏｍ`, NFD or other
  non-NFC forms, compatibility characters, `ß`/`ς`/joiners that IDNA 2003 and 2008
  read differently, letters whose lower case is ASCII such as the Kelvin sign) is
  not a valid domain -> 501 5.1.3. Homoglyphs (`exаmple.com`
  with a Cyrillic `а`) are valid but different domains: not local -> 554 5.7.1.
  Routing characters that NFKC would produce in a local part (`＠`, `％`, `﹫`,
  `！`) count as routing characters too.
- Empty domain, empty local part, several `@` outside quotes: 501 5.1.3 (syntax).
"""

import enum
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from encodings import idna

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_DOMAIN_LENGTH = 255  # RFC 5321 section 4.5.3.1.2
MAX_LABEL_LENGTH = 63  # RFC 1035 section 2.3.4
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")  # RFC 5321 section 4.1.2 sub-domain
_IPV6_TAG = "ipv6:"  # RFC 5321 section 4.1.3 IPv6-address-literal
# RFC 5321 section 4.1.2 Dot-string (atext, RFC 5322 section 3.2.3), with UTF-8 allowed (RFC 6531 section 3.3).
_ATOM = re.compile(r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+\Z")
# RFC 5321 section 4.1.2 Quoted-string: qtextSMTP (%d32-33 / %d35-91 / %d93-126) and quoted-pairSMTP.
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*"\Z')
_QUOTED_PAIR = re.compile(r"\\(.)")
ROUTING_CHARACTERS = frozenset("@%!")  # RFC 5321 section 3.6 / RFC 1123 5.2.16 / RFC 976


class AddressProblem(enum.Enum):
    """Why an envelope address is refused."""

    SYNTAX = "syntax"
    """Not local-part@domain, or a malformed local part, domain or address literal."""
    NEEDS_SMTPUTF8 = "needs_smtputf8"
    """A non-ASCII address in a transaction without SMTPUTF8 (RFC 6531 section 3.5)."""


def canonical_domain(domain: str) -> str | None:
    """`domain` as compared with local domains: lower case A-labels, no trailing dot.

    None when it is not a domain name (an address literal, bad syntax, or a Unicode
    label that IDNA mapping would have to change).
    """
    domain = domain.strip()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or domain.startswith("["):
        return None
    labels = []
    for label in domain.split("."):
        if label.isascii():
            if len(label) > MAX_LABEL_LENGTH or not _LDH_LABEL.match(label):
                return None
            labels.append(label.lower())
            continue
        a_label = _a_label(label)
        if a_label is None:
            return None
        labels.append(a_label)
    canonical = ".".join(labels)
    return canonical if len(canonical) <= MAX_DOMAIN_LENGTH else None


def _a_label(label: str) -> str | None:
    """The A-label of a U-label (any case); None when IDNA mapping would change it (RFC 5891 section 5)."""
    if any(not ch.isascii() and any(c.isascii() for c in ch.lower()) for ch in label):
        return None  # a non-ASCII letter disguised as ASCII by case mapping (KELVIN SIGN -> k, İ -> i + dot)
    label = label.lower()
    if not all(ch.isalnum() or ch == "-" or unicodedata.category(ch) in ("Mn", "Mc") for ch in label):
        return None
    try:
        if idna.nameprep(label) != label:  # NFKC, case folding, dropped characters: a disguised label
            return None
        # "xn--" and the Punycode of lower-case letters, digits, hyphens and marks: always an LDH label
        return idna.ToASCII(label).decode("ascii").lower()
    except UnicodeError:  # longer than 63 octets as an A-label
        return None


def normalize_domain(domain: str) -> str:
    """A domain in the form used for comparisons: lower case, no trailing dot, A-labels when possible."""
    canonical = canonical_domain(domain)
    if canonical is not None:
        return canonical
    return domain.strip().removesuffix(".").lower()


def split_address(address: str) -> tuple[str, str]:
    """The local part and the domain of `local@domain` (split at the last `@`)."""
    local, _, domain = address.rpartition("@")
    return local, domain


def domain_of(address: str) -> str:
    """The domain part of `local@domain`, normalised."""
    return normalize_domain(split_address(address)[1])


def dequote(local: str) -> str:
    """A local part without its quotes and quoted-pair backslashes (RFC 5321 section 4.1.2)."""
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return _QUOTED_PAIR.sub(r"\1", local[1:-1])
    return local


def has_routing(local: str) -> bool:
    """True when the (dequoted, NFKC-normalised) local part holds `@`, `%` or `!`: sender-specified routing."""
    plain = dequote(local)
    return any(ch in ROUTING_CHARACTERS for ch in plain + unicodedata.normalize("NFKC", plain))


def _valid_local_part(local: str) -> bool:
    if _QUOTED.match(local):
        return bool(dequote(local))
    return all(_ATOM.match(atom) for atom in local.split("."))


def check_address(address: str, *, smtputf8: bool) -> AddressProblem | None:
    """None when `address` is a usable local-part@domain mailbox, else the problem."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by aiosmtpd as surrogate escapes
        return AddressProblem.SYNTAX
    local, domain = split_address(address)
    if not local or not domain or not address.isprintable():
        return AddressProblem.SYNTAX
    if not _valid_local_part(local) or not _valid_domain(domain):
        return AddressProblem.SYNTAX
    if not address.isascii() and not smtputf8:
        return AddressProblem.NEEDS_SMTPUTF8
    return None


def _valid_domain(domain: str) -> bool:
    if domain.startswith("[") and domain.endswith("]"):
        return _valid_address_literal(domain[1:-1])
    if domain.endswith("."):  # RFC 5321 section 4.1.2 Domain has no trailing dot
        return False
    return canonical_domain(domain) is not None


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
    return _parse_client_ip(peer[0])


@functools.lru_cache(maxsize=4096)
def ip_text(address: IPAddress) -> str:
    """`str(address)`, remembered: the same few clients' addresses go into every message's logs and headers."""
    return str(address)


@functools.lru_cache(maxsize=4096)
def _parse_client_ip(text: str) -> IPAddress | None:
    """Parsing is asked for on every command of a session: the few addresses a server sees are remembered."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """The RCPT decision: local addresses from anyone, others from relay networks or authenticated clients."""

    local_domains: frozenset[str]
    relay_networks: tuple[IPNetwork, ...]

    @classmethod
    def create(cls, local_domains: Iterable[str], relay_networks: Iterable[IPNetwork]) -> "RelayPolicy":
        """A policy with the domains normalised."""
        return cls(frozenset(normalize_domain(domain) for domain in local_domains), tuple(relay_networks))

    def is_local(self, domain: str) -> bool:
        """True when mail for `domain` ends here (case-insensitive, trailing dot ignored, A-label compared)."""
        canonical = canonical_domain(domain)
        return canonical is not None and canonical in self.local_domains

    def is_local_address(self, address: str) -> bool:
        """True when `address` is unambiguously a mailbox here: local domain, no routing in the local part."""
        local, domain = split_address(address)
        return bool(local) and self.is_local(domain) and not has_routing(local)

    def may_relay(self, client: IPAddress | None) -> bool:
        """True when `client` is in a relay network."""
        return client is not None and any(
            client.version == network.version and client in network for network in self.relay_networks
        )

    def accepts(self, recipient: str, client: IPAddress | None, *, authenticated: bool = False) -> bool:
        """True when mail from `client` to `recipient` may be accepted."""
        return authenticated or self.may_relay(client) or self.is_local_address(recipient)
