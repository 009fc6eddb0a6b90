"""`KUBEMTA_TLS_POLICY`: per-destination TLS security levels, parsed and matched.

The syntax follows Postfix's smtp_tls_policy_maps and smtp_tls_security_level
(postconf(5), TLS_README "TLS policy table"): `domain=level;...` with the levels

- `none`: never STARTTLS;
- `may`: opportunistic STARTTLS, certificate not checked (RFC 7435);
- `encrypt`: STARTTLS required, certificate not checked;
- `verify`: STARTTLS required, certificate verified against the MX host name.

A key `example.com` matches that domain only, `.example.com` its subdomains (the
closest parent wins), and `*` is the default for every other destination, like
smtp_tls_security_level. The value is validated at start-up.
"""

from dataclasses import dataclass
from enum import StrEnum

from kubemta.v1 import message_pb2
from kubemta_dns_resolver.transports import normalize_domain

DEFAULT_KEY = "*"
SOURCE_ENTRY = "KUBEMTA_TLS_POLICY"
SOURCE_DEFAULT = "KUBEMTA_TLS_POLICY default"


class TlsLevel(StrEnum):
    """A TLS security level as written in the configuration."""

    NONE = "none"
    MAY = "may"
    ENCRYPT = "encrypt"
    VERIFY = "verify"

    @property
    def proto(self) -> message_pb2.TlsPolicy.ValueType:
        """The bus value (Route.tls_policy)."""
        return _PROTO[self]

    @property
    def rank(self) -> int:
        """Strictness: none < may < encrypt < verify."""
        return list(TlsLevel).index(self)


_PROTO: dict[TlsLevel, message_pb2.TlsPolicy.ValueType] = {
    TlsLevel.NONE: message_pb2.TLS_POLICY_NONE,
    TlsLevel.MAY: message_pb2.TLS_POLICY_MAY,
    TlsLevel.ENCRYPT: message_pb2.TLS_POLICY_ENCRYPT,
    TlsLevel.VERIFY: message_pb2.TLS_POLICY_VERIFY,
}


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    """A level found for a destination, and which configuration entry gave it."""

    level: TlsLevel
    key: str

    @property
    def is_default(self) -> bool:
        """True when it came from the `*` entry."""
        return self.key == DEFAULT_KEY


class TlsPolicyMap:
    """The parsed `KUBEMTA_TLS_POLICY`."""

    def __init__(self, entries: dict[str, TlsLevel]) -> None:
        self._entries = dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def default(self) -> TlsLevel | None:
        """The `*` level, if configured."""
        return self._entries.get(DEFAULT_KEY)

    def explicit(self, domain: str) -> PolicyMatch | None:
        """The entry for `domain` itself or its closest `.parent` entry (not the `*` default)."""
        name = normalize_domain(domain)
        level = self._entries.get(name)
        if level is not None:
            return PolicyMatch(level, name)
        labels = name.split(".")
        for index in range(1, len(labels)):
            key = "." + ".".join(labels[index:])
            level = self._entries.get(key)
            if level is not None:
                return PolicyMatch(level, key)
        return None

    def lookup(self, domain: str) -> PolicyMatch | None:
        """The explicit entry for `domain`, else the `*` default, else None."""
        match = self.explicit(domain)
        if match is not None:
            return match
        default = self.default
        return PolicyMatch(default, DEFAULT_KEY) if default is not None else None


def parse_tls_policy(text: str) -> TlsPolicyMap:
    """Parse `domain=level;.parent.domain=level;*=level` (empty: no entries)."""
    entries: dict[str, TlsLevel] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if key != DEFAULT_KEY:
            key = normalize_domain(key)
        if not sep or not key:  # normalize_domain makes "." (or "..") empty
            raise ValueError(f"invalid TLS policy entry {item!r}: expected domain=level, e.g. example.com=verify")
        try:
            level = TlsLevel(value.strip().lower())
        except ValueError:
            levels = ", ".join(level.value for level in TlsLevel)
            raise ValueError(f"invalid TLS level {value.strip()!r} in {item!r}: expected one of {levels}") from None
        if key in entries:
            raise ValueError(f"duplicate TLS policy entry for {key!r}")
        entries[key] = level
    return TlsPolicyMap(entries)
