"""SPF macros (RFC 7208 §7): checking and expanding `%{s}`, `%{l}`, `%{o}`, `%{d}`, `%{i}`, ...

A macro-string mixes literal characters (visible ASCII except `%`) with macro-expands:
`%{` letter, transformers (a non-zero digit count of right-hand parts to keep, then `r`
to reverse), delimiters (any of `.-+,/_=`, default `.`) `}`, and the escapes `%%`, `%_`
(space) and `%-` (`%20`). An upper-case letter URL-escapes its value (§7.3). The letters
`c`, `r` and `t` are only allowed in an `exp=` explanation (§7.2). `%{p}` needs a validated
reverse name, which the evaluator looks up and passes in (`unknown` when there is none).
"""

import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MACRO_LETTERS = frozenset("slodiphcrtv")
"""RFC 7208 §7.2."""
EXPLANATION_ONLY = frozenset("crt")
"""RFC 7208 §7.2: only in the `exp` text."""
DELIMITERS = frozenset(".-+,/_=")
"""RFC 7208 §7.1."""
MAX_DOMAIN_LENGTH = 253
"""RFC 7208 §7.3: a longer expanded name loses labels on the left until it fits."""
_EXPAND = re.compile(r"%\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.ASCII)
_ESCAPES = {"%": "%", "_": " ", "-": "%20"}


class MacroError(ValueError):
    """A macro-string that breaks RFC 7208 §7.1."""


@dataclass(frozen=True, slots=True)
class Literal:
    """Literal text of a macro-string."""

    text: str


@dataclass(frozen=True, slots=True)
class Expand:
    """One `%{...}` macro-expand (or an escape, then `letter` is empty and `literal` the text it stands for)."""

    letter: str
    digits: int | None = None
    reverse: bool = False
    delimiters: str = ""
    literal: str = ""


type Token = Literal | Expand


def tokenize(text: str, *, explanation: bool = False) -> list[Token]:
    """The parts of a macro-string; MacroError names the first bad one."""
    tokens: list[Token] = []
    position = 0
    literal_start = 0
    while position < len(text):
        char = text[position]
        if char != "%":
            if not explanation and not "\x21" <= char <= "\x7e":
                raise MacroError(f"character {char!r} is not allowed (visible ASCII only)")
            position += 1
            continue
        if literal_start < position:
            tokens.append(Literal(text[literal_start:position]))
        following = text[position + 1 : position + 2]
        if following in _ESCAPES:
            tokens.append(Expand("", literal=_ESCAPES[following]))
            position += 2
        elif following == "{":
            match = _EXPAND.match(text, position)
            if match is None:
                end = text.find("}", position)
                shown = text[position : end + 1] if end >= 0 else text[position:]
                raise MacroError(f"malformed macro {shown!r}")
            letter, digits, reverse, delimiters = match.groups()
            if letter.lower() not in MACRO_LETTERS:
                raise MacroError(f"unknown macro letter {letter!r} in {match.group(0)!r}")
            if letter.lower() in EXPLANATION_ONLY and not explanation:
                raise MacroError(f"macro {match.group(0)!r} is only allowed in exp= explanations")
            if digits and int(digits) == 0:
                raise MacroError(f"macro {match.group(0)!r}: the part count must not be zero")
            tokens.append(Expand(letter, int(digits) if digits else None, bool(reverse), delimiters))
            position = match.end()
        else:
            raise MacroError(f"'%' must be followed by '{{', '%', '_' or '-' in {text!r}")
        literal_start = position
    if literal_start < len(text):
        tokens.append(Literal(text[literal_start:]))
    return tokens


def uses_letter(text: str, letter: str) -> bool:
    """True when the macro-string expands `letter` (either case); False for a bad macro-string."""
    try:
        return any(isinstance(t, Expand) and t.letter.lower() == letter for t in tokenize(text, explanation=True))
    except MacroError:
        return False


@dataclass(frozen=True, slots=True)
class MacroContext:
    """The values macros expand to (RFC 7208 §7.2)."""

    sender: str
    """<sender>: `local@domain` (the local part defaults to `postmaster`, §4.3)."""
    domain: str
    """<domain>: the domain whose record is being evaluated (changes in include and redirect)."""
    ip: IPAddress
    helo: str
    validated_name: str = "unknown"
    """%{p}: a validated reverse name of `ip`, or `unknown`."""
    receiver: str = "unknown"
    """%{r}: the checking host's name (explanations only)."""

    def value(self, letter: str) -> str:
        """The raw value of a lower-case macro letter."""
        local, _, sender_domain = self.sender.rpartition("@")
        if letter == "s":
            return self.sender
        if letter == "l":
            return local or "postmaster"
        if letter == "o":
            return sender_domain
        if letter == "d":
            return self.domain
        if letter == "i":
            return ip_dotted(self.ip)
        if letter == "p":
            return self.validated_name
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "h":
            return self.helo
        if letter == "c":
            return str(self.ip)
        if letter == "r":
            return self.receiver
        if letter == "t":
            return str(int(time.time()))
        raise MacroError(f"unknown macro letter {letter!r}")


def ip_dotted(ip: IPAddress) -> str:
    """%{i}: IPv4 in dotted-quad, IPv6 as 32 dot-separated nibbles (RFC 7208 §7.3)."""
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def transform(value: str, token: Expand) -> str:
    """Split on the delimiters, reverse with `r`, keep the rightmost `digits` parts, join with dots (§7.3)."""
    delimiters = token.delimiters or "."
    parts = re.split("[" + re.escape(delimiters) + "]", value)
    if token.reverse:
        parts.reverse()
    if token.digits is not None and token.digits < len(parts):
        parts = parts[len(parts) - token.digits :]
    result = ".".join(parts)
    if token.letter.isupper():
        result = urllib.parse.quote(result, safe="")
    return result


def expand(text: str, context: MacroContext, *, explanation: bool = False) -> str:
    """The macro-string with its macros replaced; MacroError when it is malformed."""
    out: list[str] = []
    for token in tokenize(text, explanation=explanation):
        if isinstance(token, Literal):
            out.append(token.text)
        elif not token.letter:
            out.append(token.literal)
        else:
            out.append(transform(context.value(token.letter.lower()), token))
    return "".join(out)


def expand_domain(text: str, context: MacroContext) -> str:
    """A domain-spec expanded for a DNS query: no final dot, at most 253 characters (labels cut on the left)."""
    name = expand(text, context)
    if name.endswith("."):
        name = name[:-1]
    while len(name) > MAX_DOMAIN_LENGTH and "." in name:
        name = name.split(".", 1)[1]
    return name
