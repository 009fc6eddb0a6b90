"""DMARC records (RFC 7489 §6.3, §6.4): recognising and validating a `_dmarc` TXT record.

A DMARC record starts with the tag `v=DMARC1` (§6.4: records that do not are discarded,
§6.6.3). `p=` is required; `sp`, `pct`, `adkim`, `aspf`, `rua`, `ruf`, `fo`, `rf` and `ri`
are checked against §6.3; unknown tags are ignored (§6.3). Values that break the grammar,
and repeated tags, are a `DmarcSyntaxError` naming the tag.
"""

import re
from dataclasses import dataclass

VERSION_TAG = re.compile(r"v[ \t]*=[ \t]*DMARC1[ \t]*(;|\Z)")
"""RFC 7489 §6.4: dmarc-version = "v" *WSP "=" *WSP %x44.4d.41.52.43.31 (upper case), first."""
POLICIES = ("none", "quarantine", "reject")
ALIGNMENT = ("r", "s")
FAILURE_OPTIONS = ("0", "1", "d", "s")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s!,]+(![0-9]+[kmgt]?)?\Z")
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


class DmarcSyntaxError(ValueError):
    """A DMARC record that RFC 7489 §6.4 does not allow."""


@dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """The tags of a DMARC record, with the defaults of RFC 7489 §6.3 filled in."""

    p: str
    sp: str | None
    pct: int
    adkim: str
    aspf: str
    rua: tuple[str, ...]
    ruf: tuple[str, ...]

    def subdomain_policy(self) -> str:
        """The policy for subdomains: `sp`, else `p` (§6.3)."""
        return self.sp or self.p

    def summary(self) -> str:
        """`p=reject sp=reject pct=100 adkim=r aspf=r`."""
        return f"p={self.p} sp={self.subdomain_policy()} pct={self.pct} adkim={self.adkim} aspf={self.aspf}"


def is_dmarc_record(text: str) -> bool:
    """True for a TXT value whose first tag is `v=DMARC1`."""
    return VERSION_TAG.match(text.strip(" \t")) is not None


def looks_like_dmarc(text: str) -> bool:
    """A TXT value meant as DMARC but discarded by receivers (e.g. `v=dmarc1`, or v= not first)."""
    return "dmarc" in text.lower()


def parse_dmarc(text: str) -> DmarcPolicy:
    """The policy of a DMARC record; DmarcSyntaxError naming the first problem."""
    if not is_dmarc_record(text):
        raise DmarcSyntaxError("the record must start with v=DMARC1 (RFC 7489 §6.4)")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip(" \t"):
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip(" \t").lower(), value.strip(" \t")
        if not equals or not _TAG_NAME.match(name):
            raise DmarcSyntaxError(f"malformed tag {part.strip()!r}")
        if name in tags:
            raise DmarcSyntaxError(f"tag {name}= appears more than once")
        tags[name] = value
    if "p" not in tags:
        raise DmarcSyntaxError("no p= tag: the policy is required (RFC 7489 §6.3)")
    p = _choice(tags, "p", POLICIES)
    sp = _choice(tags, "sp", POLICIES) if "sp" in tags else None
    pct = tags.get("pct", "100")
    if not pct.isdigit() or len(pct) > 3 or int(pct) > 100:
        raise DmarcSyntaxError(f"pct={pct} is not a percentage from 0 to 100")
    adkim = _choice(tags, "adkim", ALIGNMENT) if "adkim" in tags else "r"
    aspf = _choice(tags, "aspf", ALIGNMENT) if "aspf" in tags else "r"
    rua, ruf = _uris(tags, "rua"), _uris(tags, "ruf")
    if "fo" in tags and any(option.strip() not in FAILURE_OPTIONS for option in tags["fo"].split(":")):
        raise DmarcSyntaxError(f"fo={tags['fo']}: options are 0, 1, d and s, separated by ':'")
    if "ri" in tags and not tags["ri"].isdigit():
        raise DmarcSyntaxError(f"ri={tags['ri']} is not a number of seconds")
    return DmarcPolicy(p, sp, int(pct), adkim, aspf, rua, ruf)


def _choice(tags: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = tags[name].lower()
    if value not in allowed:
        raise DmarcSyntaxError(f"{name}={tags[name]} is not one of {', '.join(allowed)}")
    return value


def _uris(tags: dict[str, str], name: str) -> tuple[str, ...]:
    if name not in tags:
        return ()
    uris = tuple(uri.strip(" \t") for uri in tags[name].split(","))
    for uri in uris:
        if not _URI.match(uri):
            raise DmarcSyntaxError(f"{name}= holds {uri!r}, not a URI such as mailto:dmarc@example.com")
    return uris
