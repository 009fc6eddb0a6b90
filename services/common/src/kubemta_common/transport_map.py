"""Static routes: parsing `KUBEMTA_TRANSPORTS` and `KUBEMTA_RELAYHOST`, and matching domains against them.

Shared by the dns-resolver (which routes with it) and the ingress (which asks the LMTP
mailbox server of a local domain whether a recipient exists, recipient_verify.py).
The syntax follows Postfix (transport(5), relayhost in postconf(5)):

- `KUBEMTA_TRANSPORTS` is `domain=smtp:nexthop;...`. A key `example.com` matches that
  domain only; a key `.example.com` matches its subdomains (transport_maps style).
- A next hop `[host]:port` (or `[host]`) is used as is: no MX lookup, only the A/AAAA
  records of `host` (or `host` is an IP literal). A next hop `host:port` (or `host`) is
  looked up like a mail domain: MX first, then A/AAAA.
- `KUBEMTA_RELAYHOST` is a single next hop in the same syntax (without a scheme).
- `lmtp:` next hops (lmtp(8) destination syntax) are `host:port`, `[host]:port`,
  `inet:host:port` or `unix:/path/to/socket`. An LMTP host is never looked up as a mail
  domain: a name gets only its A/AAAA records, bracketed or not (Postfix's LMTP client
  does no MX lookups either); without a port, LMTP uses port 24 (Postfix's default).

An SMTP next hop without a port uses `KUBEMTA_DELIVERY_PORT`.
"""

import ipaddress
from dataclasses import dataclass

from kubemta_common.config_types import split_host_port

SUPPORTED_SCHEMES: tuple[str, ...] = ("smtp", "lmtp")
"""Transport schemes this version delivers with."""
LMTP_SCHEME = "lmtp"
# Postfix lmtp(8): a TCP destination without a port connects to port 24 (IANA "lmtp").
LMTP_PORT = 24
UNIX_PREFIX = "unix:"
INET_PREFIX = "inet:"


@dataclass(frozen=True, slots=True)
class Nexthop:
    """Where to send mail for a domain, before DNS."""

    host: str
    """Host name (lower case, no trailing dot) or IP address."""
    port: int | None
    """TCP port; None means KUBEMTA_DELIVERY_PORT."""
    mx_lookup: bool
    """True for `host` (look up MX first), False for `[host]` (A/AAAA only)."""
    unix_socket: str = ""
    """Path of a unix socket to connect to instead (LMTP only); `host` is empty then."""

    @property
    def is_address(self) -> bool:
        """True when `host` is an IP address literal (no DNS needed)."""
        return is_ip(self.host)

    def __str__(self) -> str:
        if self.unix_socket:
            return UNIX_PREFIX + self.unix_socket
        host = f"[{self.host}]" if not self.mx_lookup else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Transport:
    """One static transport: scheme and next hop."""

    scheme: str
    nexthop: Nexthop

    @property
    def is_lmtp(self) -> bool:
        """True for an `lmtp:` transport (a mailbox server)."""
        return self.scheme == LMTP_SCHEME


def is_ip(text: str) -> bool:
    """True when `text` is an IPv4 or IPv6 address literal (no DNS needed)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def normalize_domain(domain: str) -> str:
    """A domain in the form used for matching: lower case, without a trailing dot."""
    return domain.strip().lower().rstrip(".")


def parse_nexthop(text: str) -> Nexthop:
    """Parse `[host]:port`, `[host]`, `host:port` or `host` (an IPv6 literal needs brackets)."""
    text = text.strip()
    if not text:
        raise ValueError("empty next hop")
    bracketed = text.startswith("[")
    host, port = split_host_port(text)
    if bracketed and host.lower().startswith("ipv6:"):
        host = host[5:]  # Postfix also accepts [ipv6:2001:db8::1]
    host = normalize_domain(host)
    if not host:
        raise ValueError(f"invalid next hop {text!r}: empty host")
    if not bracketed and ":" in host:
        raise ValueError(f"invalid next hop {text!r}: write an IPv6 address in brackets, e.g. [2001:db8::1]:25")
    if not is_ip(host) and not all(_valid_label(label) for label in host.split(".")):
        raise ValueError(f"invalid next hop {text!r}: {host!r} is neither a host name nor an IP address")
    return Nexthop(host=host, port=port, mx_lookup=not bracketed and not is_ip(host))


def _valid_label(label: str) -> bool:
    # RFC 1035 §2.3.4: labels of 1 to 63 octets (underscores are tolerated for real-world names)
    return 0 < len(label) <= 63 and all(ch.isalnum() or ch in "-_" for ch in label)


def parse_transport(text: str) -> Transport:
    """Parse `scheme:nexthop`, e.g. `smtp:[relay.example.net]:2525`."""
    scheme, sep, rest = text.strip().partition(":")
    scheme = scheme.strip().lower()
    if not sep or not scheme:
        raise ValueError(f"invalid transport {text!r}: expected scheme:nexthop, e.g. smtp:[relay.example.net]:25")
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported transport scheme {scheme!r} in {text!r}: supported schemes are {', '.join(SUPPORTED_SCHEMES)}"
        )
    if not rest.strip():
        raise ValueError(f"invalid transport {text!r}: missing next hop after {scheme}:")
    if scheme == LMTP_SCHEME:
        return Transport(scheme=scheme, nexthop=parse_lmtp_nexthop(rest))
    return Transport(scheme=scheme, nexthop=parse_nexthop(rest))


def parse_lmtp_nexthop(text: str) -> Nexthop:
    """Parse an LMTP destination: `unix:/path`, or `[inet:]host[:port]` / `[inet:][host][:port]` (A/AAAA only)."""
    text = text.strip()
    if text.lower().startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :].strip()
        if not path.startswith("/"):
            raise ValueError(f"invalid LMTP next hop {text!r}: the socket path must be absolute, e.g. unix:/run/lmtp")
        return Nexthop(host="", port=None, mx_lookup=False, unix_socket=path)
    if text.lower().startswith(INET_PREFIX):
        text = text[len(INET_PREFIX) :]
    nexthop = parse_nexthop(text)
    return Nexthop(host=nexthop.host, port=nexthop.port or LMTP_PORT, mx_lookup=False)


class TransportMap:
    """The parsed `KUBEMTA_TRANSPORTS`: exact domains and `.parent` entries."""

    def __init__(self, entries: dict[str, Transport]) -> None:
        self._entries = dict(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, domain: str) -> Transport | None:
        """The transport for `domain`: an exact entry, else the closest `.parent.domain` entry."""
        name = normalize_domain(domain)
        exact = self._entries.get(name)
        if exact is not None:
            return exact
        labels = name.split(".")
        for index in range(1, len(labels)):
            parent = self._entries.get("." + ".".join(labels[index:]))
            if parent is not None:
                return parent
        return None


def parse_transports(text: str) -> TransportMap:
    """Parse `domain=smtp:nexthop;domain2=smtp:nexthop`, raising ValueError naming the bad entry."""
    entries: dict[str, Transport] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"invalid transport entry {item!r}: expected domain=smtp:nexthop")
        domain = normalize_domain(key)
        if domain in ("", "."):
            raise ValueError(f"invalid transport entry {item!r}: empty domain")
        if domain in entries:
            raise ValueError(f"duplicate transport entry for {domain!r}")
        entries[domain] = parse_transport(value)
    return TransportMap(entries)


def parse_relayhost(text: str) -> Nexthop | None:
    """Parse `KUBEMTA_RELAYHOST` (`[host]:port` or `host[:port]`); empty means none."""
    if not text.strip():
        return None
    return parse_nexthop(text)
