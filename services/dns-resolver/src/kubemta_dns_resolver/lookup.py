"""DNS queries: MX and A/AAAA look-ups through dnspython's asyncio resolver.

Each look-up returns a `LookupResult` (status, records, TTL) instead of raising, so the
routing logic above it deals with five outcomes only: ok, nxdomain, nodata (RFC 2308
§2.2: the name exists without records of that type), servfail (SERVFAIL, REFUSED or
no usable answer from any name server) and timeout. `DnsLookup` is the seam unit
tests replace with a fake.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from kubemta_common.dns_client import stub_resolver
from kubemta_dns_resolver.metrics import DNS_LOOKUPS

logger = logging.getLogger(__name__)

AddressType = Literal["A", "AAAA"]


class LookupStatus(StrEnum):
    """How one DNS query ended; the values are the `result` label of kubemta_dns_lookups_total."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"

    @property
    def temporary(self) -> bool:
        """True when asking again later may give a different answer."""
        return self in (LookupStatus.SERVFAIL, LookupStatus.TIMEOUT)


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record (RFC 1035 §3.3.9); `exchange` is "." for a null MX (RFC 7505)."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class LookupResult[T]:
    """The answer to one query: records for OK, otherwise none; `ttl` is how long it may be cached."""

    status: LookupStatus
    records: tuple[T, ...] = ()
    ttl: float = 0.0
    detail: str = ""


class DnsLookup(Protocol):
    """The DNS queries the router needs."""

    async def mx(self, name: str) -> LookupResult[MxRecord]:
        """The MX records of `name`."""
        ...

    async def addresses(self, name: str, rdtype: AddressType) -> LookupResult[str]:
        """The A or AAAA addresses of `name`."""
        ...


class DnspythonLookup:
    """`DnsLookup` over dnspython's asyncio stub resolver, without its cache (the router caches routes)."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float) -> None:
        self._resolver = stub_resolver(nameservers, timeout)

    async def mx(self, name: str) -> LookupResult[MxRecord]:
        result = await self._query(name, dns.rdatatype.MX)
        if result.status is not LookupStatus.OK:
            return LookupResult(result.status, ttl=result.ttl, detail=result.detail)
        records = tuple(
            MxRecord(rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower())
            for rdata in result.records
            if isinstance(rdata, MX)
        )
        return LookupResult(LookupStatus.OK, records, result.ttl)

    async def addresses(self, name: str, rdtype: AddressType) -> LookupResult[str]:
        result = await self._query(name, dns.rdatatype.A if rdtype == "A" else dns.rdatatype.AAAA)
        if result.status is not LookupStatus.OK:
            return LookupResult(result.status, ttl=result.ttl, detail=result.detail)
        addresses = tuple(rdata.address for rdata in result.records if isinstance(rdata, A | AAAA))
        return LookupResult(LookupStatus.OK, addresses, result.ttl)

    async def txt(self, name: str) -> LookupResult[str]:
        """The TXT records of `name`, each one's character-strings joined (RFC 8461 §3.1 reads them so)."""
        result = await self._query(name, dns.rdatatype.TXT)
        if result.status is not LookupStatus.OK:
            return LookupResult(result.status, ttl=result.ttl, detail=result.detail)
        texts = tuple(
            b"".join(rdata.strings).decode("ascii", errors="replace")
            for rdata in result.records
            if isinstance(rdata, TXT)
        )
        return LookupResult(LookupStatus.OK, texts, result.ttl)

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> LookupResult[object]:
        what = f"{name} type={rdtype.name}"
        try:
            if not name.strip("."):
                raise dns.name.EmptyLabel
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:  # not a domain name: no query sent, it cannot exist
            return LookupResult(LookupStatus.NXDOMAIN, detail=f"invalid name {what!r}: {exc}")
        result = await self._resolve(qname, rdtype, what)
        DNS_LOOKUPS.labels(result=result.status.value).inc()
        logger.debug("DNS %s: %s %s", what, result.status.value, result.detail)
        return result

    async def _resolve(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, what: str) -> LookupResult[object]:
        try:
            answer = await self._resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return LookupResult(LookupStatus.NXDOMAIN, ttl=_negative_ttl(exc), detail=f"{what}: host not found")
        except dns.resolver.LifetimeTimeout:
            return LookupResult(LookupStatus.TIMEOUT, detail=f"{what}: timed out")
        except dns.resolver.NoNameservers as exc:
            return LookupResult(LookupStatus.SERVFAIL, detail=f"{what}: {exc}")
        except dns.exception.DNSException as exc:
            return LookupResult(LookupStatus.SERVFAIL, detail=f"{what}: {exc}")
        ttl = float(answer.chaining_result.minimum_ttl)
        if answer.rrset is None:
            return LookupResult(LookupStatus.NODATA, ttl=ttl, detail=f"{what}: no records of this type")
        return LookupResult(LookupStatus.OK, tuple(answer.rrset), ttl)


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    """The negative-caching TTL of an NXDOMAIN answer: from its SOA (RFC 2308 §5); unknown = unbounded
    (the router caps it with KUBEMTA_DNS_NEGATIVE_TTL)."""
    responses = exc.kwargs.get("responses") or {}
    for response in responses.values():
        if isinstance(response, dns.message.QueryMessage):
            try:
                return float(response.resolve_chaining().minimum_ttl)
            except dns.exception.DNSException:
                continue
    return float("inf")
