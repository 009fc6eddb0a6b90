"""SPF records (RFC 7208 §4.5, §12): recognising, parsing and validating every term.

`parse_record` turns `v=spf1 ip4:192.0.2.0/24 include:_spf.example.net ~all` into
mechanisms (qualifier, name, domain-spec, network, CIDR lengths) and the `redirect=` /
`exp=` modifiers; any term the ABNF of §12 does not allow is an `SpfSyntaxError` naming
that term (an unknown mechanism, a bad address or CIDR length, a bad macro, a domain-spec
without a top label, a repeated modifier...), which receivers treat as permerror (§4.6).
Unknown modifiers (`name=value`) are allowed and ignored (§6).
"""

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from kubemta_mail_auth.domain_check.spf_macros import Expand, MacroError, tokenize

VERSION = "v=spf1"
"""RFC 7208 §4.5: a record starts with exactly this version section (case-insensitive)."""
DNS_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
"""RFC 7208 §4.6.4: the mechanisms that cause DNS queries (with the redirect modifier)."""
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
"""RFC 7208 §5."""
IP4_MAX_CIDR = 32
IP6_MAX_CIDR = 128

_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)\Z", re.ASCII | re.DOTALL)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.ASCII | re.DOTALL)
_CIDR = re.compile(r"(0|[1-9][0-9]*)\Z")
_SPEC_AND_CIDR = re.compile(r"(?P<spec>.*?)(?P<cidr4>/[0-9]+)?(?P<cidr6>//[0-9]+)?\Z", re.DOTALL)
_TOPLABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z", re.ASCII)


class Qualifier(StrEnum):
    """RFC 7208 §4.6.2: the result a matching mechanism gives."""

    PASS = "+"
    FAIL = "-"
    SOFTFAIL = "~"
    NEUTRAL = "?"


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive: `[qualifier]name[:domain-spec or network][/cidr4][//cidr6]`."""

    text: str
    qualifier: Qualifier
    name: str
    domain_spec: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    cidr4: int = IP4_MAX_CIDR
    cidr6: int = IP6_MAX_CIDR


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A parsed SPF record."""

    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: str | None = None
    explanation: str | None = None

    @property
    def dns_terms(self) -> int:
        """The terms of this record alone that cause DNS queries (RFC 7208 §4.6.4)."""
        return sum(m.name in DNS_MECHANISMS for m in self.mechanisms) + (self.redirect is not None)


class SpfSyntaxError(ValueError):
    """A record the ABNF of RFC 7208 §12 does not allow; the message names the term."""


def is_spf_record(text: str) -> bool:
    """True for a TXT value that is an SPF record: `v=spf1` alone or followed by a space (RFC 7208 §4.5)."""
    return text.lower() == VERSION or text[: len(VERSION) + 1].lower() == VERSION + " "


def parse_record(text: str) -> SpfRecord:
    """The terms of an SPF record; SpfSyntaxError naming the first term that is invalid."""
    if not is_spf_record(text):
        raise SpfSyntaxError(f"does not start with {VERSION!r}")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, str] = {}
    for term in text.split(" ")[1:]:
        if not term:
            continue
        modifier = _MODIFIER.match(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if name in modifiers:
                    raise SpfSyntaxError(f"{name}= appears more than once (RFC 7208 §6)")
                _check_domain_spec(value, term)
                modifiers[name] = value
            else:
                _check_macro_string(value, term)  # unknown modifiers are ignored but must parse (§6)
            continue
        mechanisms.append(parse_mechanism(term))
    return SpfRecord(text, tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))


def parse_mechanism(term: str) -> Mechanism:
    """One directive; SpfSyntaxError naming it."""
    match = _DIRECTIVE.match(term)
    if match is None:
        raise SpfSyntaxError(f"invalid term {term!r}")
    qualifier = Qualifier(match.group(1) or "+")
    name, rest = match.group(2).lower(), match.group(3)
    if name not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism {term!r}")
    if name == "all":
        if rest:
            raise SpfSyntaxError(f"'all' takes no argument: {term!r}")
        return Mechanism(term, qualifier, name)
    if name in ("ip4", "ip6"):
        return _ip_mechanism(term, qualifier, name, rest)
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) == 1:
            raise SpfSyntaxError(f"{name!r} needs a domain, as in {name}:example.com: {term!r}")
        spec = rest[1:]
        _check_domain_spec(spec, term)
        return Mechanism(term, qualifier, name, spec)
    if name == "ptr":
        if not rest:
            return Mechanism(term, qualifier, name)
        if not rest.startswith(":") or len(rest) == 1:
            raise SpfSyntaxError(f"invalid 'ptr' term {term!r}")
        _check_domain_spec(rest[1:], term)
        return Mechanism(term, qualifier, name, rest[1:])
    return _a_or_mx(term, qualifier, name, rest)


def _a_or_mx(term: str, qualifier: Qualifier, name: str, rest: str) -> Mechanism:
    if rest and rest[0] not in ":/":
        raise SpfSyntaxError(f"invalid {name!r} term {term!r}")
    body = rest[1:] if rest.startswith(":") else rest
    parts = _SPEC_AND_CIDR.match(body)
    assert parts is not None  # the pattern matches any string
    spec = parts.group("spec") or None
    if rest.startswith(":"):
        if spec is None:
            raise SpfSyntaxError(f"{name!r} with ':' needs a domain: {term!r}")
        _check_domain_spec(spec, term)
    elif spec is not None:
        raise SpfSyntaxError(f"invalid CIDR length in {term!r}")
    cidr4 = _cidr(parts.group("cidr4"), 1, IP4_MAX_CIDR, term)
    cidr6 = _cidr(parts.group("cidr6"), 2, IP6_MAX_CIDR, term)
    return Mechanism(term, qualifier, name, spec, cidr4=cidr4, cidr6=cidr6)


def _ip_mechanism(term: str, qualifier: Qualifier, name: str, rest: str) -> Mechanism:
    if not rest.startswith(":") or len(rest) == 1:
        raise SpfSyntaxError(
            f"{name!r} needs an address, as in {name}:{'192.0.2.0/24' if name == 'ip4' else '2001:db8::/32'}: {term!r}"
        )
    address_text, slash, length_text = rest[1:].partition("/")
    maximum = IP4_MAX_CIDR if name == "ip4" else IP6_MAX_CIDR
    try:
        if "%" in address_text:  # Python accepts an IPv6 zone index (fe80::1%eth0); RFC 4291 §2.2 does not
            raise ValueError(address_text)
        address = ipaddress.IPv4Address(address_text) if name == "ip4" else ipaddress.IPv6Address(address_text)
    except ValueError:
        raise SpfSyntaxError(f"invalid {'IPv4' if name == 'ip4' else 'IPv6'} address in {term!r}") from None
    length = _cidr("/" + length_text if slash else None, 1, maximum, term)
    network = ipaddress.ip_network(f"{address}/{length}", strict=False)
    return Mechanism(term, qualifier, name, network=network)


def _cidr(text: str | None, slashes: int, maximum: int, term: str) -> int:
    if text is None:
        return maximum
    digits = text[slashes:]
    if not _CIDR.match(digits) or int(digits) > maximum:
        raise SpfSyntaxError(f"invalid CIDR length /{digits} in {term!r} (0 to {maximum}, no leading zeros)")
    return int(digits)


def _check_macro_string(text: str, term: str) -> None:
    try:
        tokenize(text)
    except MacroError as exc:
        raise SpfSyntaxError(f"invalid macro in {term!r}: {exc}") from None


def _check_domain_spec(spec: str, term: str) -> None:
    """RFC 7208 §7.1: domain-spec = macro-string domain-end; domain-end = "." toplabel ["."] / macro-expand."""
    try:
        tokens = tokenize(spec)
    except MacroError as exc:
        raise SpfSyntaxError(f"invalid macro in {term!r}: {exc}") from None
    if not tokens:
        raise SpfSyntaxError(f"empty domain in {term!r}")
    if isinstance(tokens[-1], Expand):
        return
    literal = spec[:-1] if spec.endswith(".") else spec
    head, dot, toplabel = literal.rpartition(".")
    if not dot or not _TOPLABEL.match(toplabel) or toplabel.isdigit():
        raise SpfSyntaxError(
            f"invalid domain {spec!r} in {term!r}: it must end in a top label such as .com (RFC 7208 §7.1)"
        )
    if "%" not in head and any(not label for label in head.split(".")):
        raise SpfSyntaxError(f"invalid domain {spec!r} in {term!r}: empty label")
