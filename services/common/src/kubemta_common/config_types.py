"""Parsers for the configuration value formats: durations, sizes, lists, listen addresses.

Durations are `30s`, `5m`, `4h`, `5d` (a bare number is seconds); lists are
comma-separated; a listen value is `host:port` (`[v6]:port` for IPv6) and an empty
value turns that listener off; a name server is an IP address with an optional port.
"""

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

DNS_PORT = 53  # RFC 1035 §4.2
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `20ms`, `30s`, `5m`, `4h`, `5d` or `90`."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: expected a number with unit ms, s, m, h, d or w (e.g. 5m)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, e.g. 300 -> `5m`, 0.02 -> `20ms`."""
    whole = int(seconds)
    if whole != seconds:
        millis = round(seconds * 1000, 9)
        return f"{int(millis)}ms" if seconds < 1 and millis.is_integer() else f"{seconds}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def split_list(value: Any) -> Any:
    """Split a comma-separated environment value into stripped, non-empty items."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _to_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _to_durations(value: Any) -> Any:
    items = split_list(value)
    if isinstance(items, list):
        return [_to_duration(item) for item in items]
    return items


CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
"""A list of strings written as `a,b,c` in the environment."""

Duration = Annotated[float, BeforeValidator(_to_duration)]
"""Seconds, written as `30s`, `5m`, `4h`, `5d`."""

DurationList = Annotated[list[float], NoDecode, BeforeValidator(_to_durations)]
"""A list of durations written as `5m,10m,1h`."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A TCP address to listen on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress | None:
    """`host:port` -> ListenAddress; an empty value -> None (listener off)."""
    text = text.strip()
    if not text:
        return None
    host, port = split_host_port(text)
    if port is None:
        raise ValueError(f"invalid listen address {text!r}: expected host:port")
    return ListenAddress(host, port)


def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    """Split `host:port`, `[v6]:port`, `host` or `[host]` into host and port."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"invalid address {text!r}: missing ]")
        port_text = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"invalid address {text!r}: empty host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid port in {text!r}")
    return host, int(port_text)


def parse_nameserver(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (port 53) -> (IP address, port); the host must be an IP address."""
    host, port = split_host_port(text, DNS_PORT)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid name server {text!r}: expected an IP address, e.g. 10.96.0.10:53") from None
    assert port is not None
    return host, port


def _to_listen(value: Any) -> Any:
    return parse_listen(value) if isinstance(value, str) else value


Listen = Annotated[ListenAddress | None, BeforeValidator(_to_listen)]
"""A `host:port` listen address, or None when the variable is empty."""


def _to_networks(value: Any) -> Any:
    items = split_list(value)
    if isinstance(items, list):
        return [ipaddress.ip_network(item, strict=False) for item in items]
    return items


NetworkList = Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode, BeforeValidator(_to_networks)]
"""A list of CIDR networks written as `127.0.0.0/8,::1/128`."""


type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _to_addresses(value: Any) -> Any:
    items = split_list(value)
    if isinstance(items, list):
        addresses: list[IPAddress] = []
        for item in items:
            try:
                address = ipaddress.ip_address(item) if isinstance(item, str) else item
            except ValueError:
                raise ValueError(f"invalid IP address {item!r}") from None
            if address not in addresses:
                addresses.append(address)
        return addresses
    return items


AddressList = Annotated[list[ipaddress.IPv4Address | ipaddress.IPv6Address], NoDecode, BeforeValidator(_to_addresses)]
"""A list of IP addresses written as `192.0.2.1,2001:db8::1` (duplicates dropped)."""
