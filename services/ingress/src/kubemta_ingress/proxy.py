"""The real client address behind a load balancer: the PROXY protocol, v1 (text) and v2 (binary).

Specification: haproxy's proxy-protocol.txt. A connection from a
`KUBEMTA_PROXY_PROTOCOL_TRUSTED` network must start with a PROXY header within
`KUBEMTA_PROXY_PROTOCOL_TIMEOUT`; without a complete, valid one it is closed without a
word (the specification: the receiver "MUST NOT try to guess" and drops the
connection). The header is parsed by aiosmtpd (aiosmtpd/proxy_protocol.py
`get_proxy`). Its source address then replaces the session's `peer`, so relay trust,
connection limits, logs, the `Received:` header and the published message all see the
real client. A v2 `LOCAL` command (a health check by the proxy itself) and a v1
`UNKNOWN` keep the socket's own address, as the specification demands.

From anywhere else a PROXY header is what it looks like to a server without PROXY
support: an unknown command (`500`), counted as `proxy_protocol_error`, and it never
changes the client address. A v2 header, binary, cannot be answered line by line: it
gets one `500` and the connection is closed.

`client_address(session)` is the one way to read the client's address.
"""

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiosmtpd.proxy_protocol import AF, V2_CMD, V2_SIGNATURE, ProxyData, get_proxy
from aiosmtpd.smtp import Session

from kubemta_ingress.policy import IPAddress, client_ip, ip_text

logger = logging.getLogger(__name__)

type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

V1_PREFIX = b"PROXY "
V2_PREFIX = V2_SIGNATURE[:5]  # enough to tell it from any SMTP command: it starts with an empty line


@dataclass(frozen=True, slots=True)
class ProxyTrust:
    """Which peers must (and alone may) send a PROXY header, and how long they have."""

    networks: tuple[IPNetwork, ...] = ()
    timeout: float = 5.0

    @classmethod
    def create(cls, networks: Sequence[IPNetwork], timeout: float) -> "ProxyTrust":
        """The trust for `KUBEMTA_PROXY_PROTOCOL_TRUSTED` and `KUBEMTA_PROXY_PROTOCOL_TIMEOUT`."""
        return cls(tuple(networks), timeout)

    def trusts(self, address: IPAddress | None) -> bool:
        """True when a connection from `address` must start with a PROXY header."""
        return address is not None and any(address in network for network in self.networks)


def client_address(session: Session | None) -> str:
    """The client's IP address as text (the PROXY header's source when one was accepted), or `unknown`."""
    address = client_ip(session.peer) if session is not None else None
    return ip_text(address) if address is not None else "unknown"


async def read_header(reader: asyncio.StreamReader, within: float) -> ProxyData | None:
    """The PROXY header at the start of `reader`; None when missing, invalid or incomplete after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            data = await get_proxy(reader)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    return data if data.valid else None


def proxied_peer(data: ProxyData) -> tuple[str, int] | None:
    """The `peer` a valid header names, or None when the socket's own address stands (LOCAL, UNKNOWN, UNIX)."""
    if data.version == 2 and data.command != V2_CMD.PROXY:
        return None
    if data.family not in (AF.INET, AF.INET6):
        return None
    if not isinstance(data.src_addr, ipaddress.IPv4Address | ipaddress.IPv6Address) or data.src_port is None:
        return None
    return (str(data.src_addr), int(data.src_port))


def looks_like_v2_header(first_bytes: bytes) -> bool:
    """True when the first bytes of a connection start a binary PROXY v2 header."""
    return first_bytes.startswith(V2_PREFIX)
