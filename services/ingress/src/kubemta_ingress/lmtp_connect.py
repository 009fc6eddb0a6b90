"""Connecting to the LMTP next hop of a local domain (`KUBEMTA_TRANSPORTS`) for recipient probes.

A next hop is a unix socket (`lmtp:unix:/path`), an IP address, or a host name whose
A and AAAA records are looked up with dnspython through `KUBEMTA_DNS_NAMESERVERS`
(kubemta_common.dns_client; an LMTP host never gets an MX look-up, as in Postfix'
lmtp(8)). Addresses are kept for their DNS TTL (at most `MAX_ADDRESS_TTL`); the first
`MAX_ADDRESSES` are tried in turn until one accepts the connection (Postfix'
`lmtp_mx_address_limit`, default 5). Every failure is `Unreachable`, with a
Postfix-style account (`connect to host[addr]:port: Connection refused`); the caller
bounds the time all of this may take.
"""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from kubemta_common.transport_map import Nexthop, is_ip
from kubemta_common.ttl_cache import TtlLruCache

MAX_ADDRESSES = 5  # Postfix lmtp_mx_address_limit
MAX_ADDRESS_TTL = 3600.0  # seconds an A/AAAA answer is kept at most
ADDRESS_CACHE_SIZE = 256  # host names kept (KUBEMTA_TRANSPORTS names only a few)
READ_LIMIT = 4096  # longest reply line read (RFC 5321 section 4.5.3.1.5 allows 512 octets)
RECORD_TYPES = ("A", "AAAA")


class Unreachable(Exception):
    """No connection to the next hop; the message says why (Postfix wording)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """An open LMTP connection and the name of the server for messages (`host[address]`)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: str

    async def close(self) -> None:
        """Close the connection (a peer that is already gone is fine)."""
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def os_reason(exc: OSError) -> str:
    """The system's words for a connection error (`Connection refused`), as Postfix logs them."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class LmtpConnector:
    """Opens connections to LMTP next hops, remembering host names' addresses for their TTL."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = resolver
        self._addresses: TtlLruCache[str, list[str]] = TtlLruCache(ADDRESS_CACHE_SIZE, clock)

    async def connect(self, nexthop: Nexthop) -> Connection:
        """A connection to `nexthop`; Unreachable when none can be made."""
        if nexthop.unix_socket:
            try:
                reader, writer = await asyncio.open_unix_connection(nexthop.unix_socket, limit=READ_LIMIT)
            except OSError as exc:
                raise Unreachable(f"connect to {nexthop.unix_socket}: {os_reason(exc)}") from None
            return Connection(reader, writer, nexthop.unix_socket)
        assert nexthop.port is not None, "an LMTP TCP next hop always has a port (transport_map.LMTP_PORT)"
        addresses = [nexthop.host] if is_ip(nexthop.host) else await self.addresses(nexthop.host)
        errors: list[str] = []
        for address in addresses[:MAX_ADDRESSES]:
            server = f"{nexthop.host}[{address}]"
            try:
                reader, writer = await asyncio.open_connection(address, nexthop.port, limit=READ_LIMIT)
            except OSError as exc:
                errors.append(f"connect to {server}:{nexthop.port}: {os_reason(exc)}")
                continue
            return Connection(reader, writer, server)
        raise Unreachable("; ".join(errors) or f"no address for {nexthop.host}")

    async def addresses(self, host: str) -> list[str]:
        """The IPv4 then IPv6 addresses of `host` (cached for their TTL); Unreachable when it has none."""
        cached = self._addresses.get(host)
        if cached is not None:
            return cached
        answers = await asyncio.gather(*(self._query(host, rdtype) for rdtype in RECORD_TYPES))
        addresses = [address for found, _, _ in answers for address in found]
        if not addresses:
            problems = "; ".join(problem for _, _, problem in answers if problem)
            raise Unreachable(f"Host or domain name not found. Name service error for name={host}: {problems}")
        ttl = min(ttl for found, ttl, _ in answers if found)
        self._addresses.put(host, addresses, min(ttl, MAX_ADDRESS_TTL))
        return addresses

    async def _query(self, host: str, rdtype: str) -> tuple[list[str], float, str]:
        """(addresses, TTL, problem) of one look-up; a failure is a problem, never an exception."""
        try:
            answer = await self._resolver.resolve(host, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return [], 0.0, f"type={rdtype}: Host not found"
        except dns.resolver.NoAnswer:
            return [], 0.0, f"type={rdtype}: No address associated with hostname"
        except dns.exception.Timeout:
            return [], 0.0, f"type={rdtype}: timed out"
        except dns.exception.DNSException as exc:
            return [], 0.0, f"type={rdtype}: {type(exc).__name__}"
        rrset = answer.rrset
        if rrset is None:
            return [], 0.0, f"type={rdtype}: No address associated with hostname"
        return [record.to_text() for record in rrset], float(rrset.ttl), ""
