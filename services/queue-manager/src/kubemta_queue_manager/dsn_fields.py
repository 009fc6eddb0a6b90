"""Field values of a DSN that cannot add a line: every outside text passes one gate, `field_value`.

Addresses, reply texts, host names, queue ids and diagnostics come from outside (a
client, a remote server, DNS). Written into a header field or a delivery-status field
as is, a CR/LF (or an RFC 2047 encoded word that a reader decodes into one) would add
a line, e.g. a forged `Action:`. `field_value` turns any text into one line of safe
characters: printable ASCII (and printable UTF-8 where the field may carry it),
everything else as `\\x{HEX}` (the escape of RFC 6533 §3), `=?` broken so that no
encoded word can start, and a bounded length. Every value of every field and header
line of a DSN is a `FieldValue`, which only `field_value` makes.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NewType

FieldValue = NewType("FieldValue", str)
"""A single line of safe characters: made only by `field_value`."""

MAX_LINE = 998
"""RFC 5322 §2.1.1: the longest line a message may carry."""

MAX_TEXT = 800
"""Diagnostic and other texts are cut here so that a field stays one line under MAX_LINE."""

MAX_ADDRESS = 900
"""The longest escaped address written (an address is at most 256 octets, RFC 5321 §4.5.3.1.3)."""

MAX_HOST = 300
"""The longest host name written (a DNS name is at most 253 characters, RFC 1035 §2.3.4)."""

_ELLIPSIS = "..."
_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
"""RFC 3463 §2: an enhanced status code."""
_ENHANCED_CODE_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?:\s|$)")
"""RFC 3463 §2: an enhanced status code at the start of a reply text."""
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
"""RFC 5322 §3.2.3 atext."""
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_DOMAIN_LITERAL_RE = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]")
"""RFC 5322 §3.4.1 domain-literal, without folding white space."""
_QUOTED_PAIR_SPECIALS = frozenset('"\\=?')
"""Quoted as quoted-pairs in a local part: RFC 5322 requires `"` and `\\`; `=` and `?` so no encoded word starts."""


def escape(char: str) -> str:
    """`\\x{HEX}` (RFC 6533 §3 EmbeddedUnicodeChar), at least two hex digits."""
    return f"\\x{{{ord(char):02X}}}"


def _safe_char(char: str, utf8: bool) -> bool:
    if char.isascii():
        return " " <= char <= "~"
    return utf8 and char.isprintable()  # not Cc, Cf, Cs, Co, Cn, Zl, Zp or a non-ASCII space


def _join_limited(pieces: Iterable[str], limit: int) -> str:
    """The pieces joined, cut between pieces with "..." when longer than `limit`."""
    out: list[str] = []
    size = 0
    for piece in pieces:
        if size + len(piece) > limit:
            while out and size + len(_ELLIPSIS) > limit:
                size -= len(out.pop())
            return "".join(out) + _ELLIPSIS
        out.append(piece)
        size += len(piece)
    return "".join(out)


def _gated(text: str, utf8: bool) -> Iterable[str]:
    previous = ""
    for char in text:
        piece = char if _safe_char(char, utf8) and not (char == "?" and previous == "=") else escape(char)
        previous = piece[-1]
        yield piece


def field_value(text: str, *, utf8: bool = False, limit: int = MAX_TEXT) -> FieldValue:
    """`text` as one line of safe characters, at most `limit` long; idempotent.

    Kept: printable ASCII and, with `utf8`, printable non-ASCII characters; every other
    character (controls, CR, LF, NUL, U+0085, U+2028, lone surrogates, ...) becomes
    `\\x{HEX}`, and the `?` of `=?` too, so that no RFC 2047 encoded word can start.
    """
    return FieldValue(_join_limited(_gated(text, utf8), limit))


def header_line(name: str, value: FieldValue) -> str:
    """`Name: value`, one line (no line ending)."""
    return f"{name}: {value}"


def one_line(text: str) -> str:
    """Runs of white space (CR, LF, tabs, U+0085, U+2028, ...) as single spaces."""
    return " ".join(text.split())


def _address_pieces(address: str, unicode: bool) -> Iterable[str]:
    for char in address:
        keep = ("!" <= char <= "~" and char not in "+=\\") or (unicode and not char.isascii() and char.isprintable())
        yield char if keep else escape(char)


def xtext_address(address: str) -> str:
    """RFC 6533 §3 utf-8-addr-xtext: non-QCHAR characters (and `+`, `=`, `\\`) as `\\x{HEX}`."""
    return "".join(_address_pieces(address, unicode=False))


def unitext_address(address: str) -> str:
    """RFC 6533 §3 utf-8-addr-unitext: as xtext, but printable non-ASCII characters as they are."""
    return "".join(_address_pieces(address, unicode=True))


def final_recipient(address: str, *, utf8: bool = False) -> FieldValue:
    """The Final-Recipient value (RFC 3464 §2.3.2).

    `rfc822; address` for an address of printable ASCII that no reader could decode
    (no `=?`); else the `utf-8` type of RFC 6533 §3 with the address as xtext, or as
    unitext when `utf8` (a message/global-delivery-status part).
    """
    if not address:
        return field_value("rfc822; <>")
    if all("!" <= char <= "~" for char in address) and "=?" not in address and len(address) <= MAX_ADDRESS:
        return field_value(f"rfc822; {address}", limit=MAX_LINE)
    encoded = _join_limited(_address_pieces(address, unicode=utf8), MAX_ADDRESS)
    return field_value(f"utf-8; {encoded}", utf8=utf8, limit=MAX_LINE)


_ADDR_TYPE_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,40}")
"""RFC 3464 §2.1.2 address-type: an atom (bounded: a type is a short registered name)."""


def original_recipient(addr_type: str, address: str, *, utf8: bool = False) -> FieldValue:
    """The Original-Recipient value (RFC 3464 §2.3.1) of an ORCPT (RFC 3461 §4.2), decoded from xtext on the bus.

    An `rfc822` (or other registered type) address of printable ASCII is written as it is, like
    Final-Recipient. A `utf-8` address (RFC 6533 §3), and any address that is not printable ASCII
    or could be read as an encoded word (non-ASCII, CR/LF, spaces, controls), is written with the
    `utf-8` type: as utf-8-addr-xtext (`\\x{HEX}`, pure ASCII) in a message/delivery-status part, as
    unitext when `utf8` (message/global-delivery-status). A type that is no atom, or holds `=?` (which the field
    gate would break into `=\\x{3F}`, leaving no type a reader could parse), reads as `rfc822`.
    At most MAX_ADDRESS characters of address (an ORCPT is at most 500): always one line.
    """
    kind = addr_type.lower() if _ADDR_TYPE_RE.fullmatch(addr_type) and "=?" not in addr_type else "rfc822"
    plain = all("!" <= char <= "~" for char in address) and "=?" not in address and len(address) <= MAX_ADDRESS
    if kind != "utf-8" and plain:
        return field_value(f"{kind}; {address}", limit=MAX_LINE)
    encoded = _join_limited(_address_pieces(address, unicode=utf8), MAX_ADDRESS)
    return field_value(f"utf-8; {encoded}", utf8=utf8, limit=MAX_LINE)


def is_utf8_address(address: str) -> bool:
    """Whether `address` is written as unitext in a message/global-delivery-status part."""
    return bool(address) and not address.isascii()


def host_value(host: str) -> FieldValue:
    """A host name from outside (an MX name, our own host name), as a field value."""
    return field_value(host, limit=MAX_HOST)


def status_code(status: str, fallback: str) -> FieldValue:
    """The Status value (RFC 3464 §2.3.4): `status` when it is an RFC 3463 code, else `fallback`."""
    return field_value(status if _STATUS_RE.fullmatch(status) else fallback)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a Diagnostic-Code and the human text say about one recipient."""

    smtp_code: int
    status: str
    text: str


def smtp_reply(reply: Reply) -> str:
    """`550 5.1.1 text`: the reply with its codes, not repeating codes the text already starts with."""
    text = one_line(reply.text)
    code = str(reply.smtp_code)
    if text.startswith((code + " ", code + "-")) or text == code:
        return text
    if _ENHANCED_CODE_RE.match(text):
        return f"{code} {text}"
    return f"{code} {reply.status} {text}".rstrip()


def diagnostic_value(reply: Reply) -> FieldValue:
    """The Diagnostic-Code value (RFC 3464 §2.3.6): `smtp;` with the reply, else `X-kubemta;` with the text."""
    if reply.smtp_code:
        return field_value(f"smtp; {smtp_reply(reply)}")
    return field_value(f"X-kubemta; {one_line(reply.text) or 'no further information'}")


def _is_dot_atom(text: str, utf8: bool) -> bool:
    """RFC 5322 §3.2.3 dot-atom-text (RFC 6532 §3.2: with UTF-8 atext when `utf8`)."""
    return all(
        atom and all(char in _ATEXT or (utf8 and not char.isascii() and char.isprintable()) for char in atom)
        for atom in text.split(".")
    )


def _is_domain(domain: str, utf8: bool) -> bool:
    if _DOMAIN_LITERAL_RE.fullmatch(domain):
        return True
    return all(
        label and all(char in _LABEL_CHARS or (utf8 and not char.isascii() and char.isprintable()) for char in label)
        for label in domain.split(".")
    )


def _unquoted(local: str) -> str | None:
    """The value of an RFC 5322 quoted-string local part, or None when `local` is not one."""
    if len(local) < 2 or local[0] != '"' or local[-1] != '"':
        return None
    value: list[str] = []
    chars = iter(local[1:-1])
    for char in chars:
        if char == "\\":
            char = next(chars, "")
            if not char:
                return None
        elif char == '"':
            return None
        value.append(char)
    return "".join(value)


def mailbox(address: str, *, utf8: bool) -> FieldValue | None:
    """`address` as an RFC 5322 addr-spec for a To: field, or None when it cannot be one.

    A local part that is not a dot-atom, or that holds `=?`, is written as a quoted
    string whose `"`, `\\`, `=` and `?` are quoted-pairs: no reader decodes an encoded
    word in it. Controls, surrogates, an empty part or a domain that is not a host
    name or an address literal make it None.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not _is_domain(domain, utf8):
        return None
    value = _unquoted(local)
    if value is None:
        value = local
    if _is_dot_atom(value, utf8) and "=?" not in value:
        rendered = value
    elif value and all(_safe_char(char, utf8) for char in value):
        rendered = '"' + "".join("\\" + char if char in _QUOTED_PAIR_SPECIALS else char for char in value) + '"'
    else:
        return None
    addr_spec = f"{rendered}@{domain}"
    safe = field_value(addr_spec, utf8=utf8, limit=MAX_ADDRESS)
    return safe if safe == addr_spec else None
