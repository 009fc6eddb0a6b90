"""DNS look-ups for the domain check: TXT, A, AAAA, MX and PTR through dnspython's asyncio resolver.

Every query returns an `Answer` instead of raising: the outcome (ok, nxdomain, nodata,
servfail, timeout) and the records as text, so the checks above deal with DNS results,
never with exceptions. A timeout or SERVFAIL is `temporary`: the checks report it as
`unknown`. NXDOMAIN and NODATA together are the "void" answers of RFC 7208 §4.6.4.

`DnspythonResolver` is configured like the dns-resolver service's look-ups
(`KUBEMTA_DNS_NAMESERVERS` as host:port, else /etc/resolv.conf; no cache; each query
bounded by `KUBEMTA_DNS_TIMEOUT`). `Resolver` is the seam unit tests fill with a fake;
`MemoResolver` asks each question once per report.
"""

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA

from kubemta_common.dns_client import PER_SERVER_TIMEOUT, stub_resolver

logger = logging.getLogger(__name__)

type RecordType = Literal["TXT", "A", "AAAA", "MX", "PTR"]
type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TIMEOUT = 10.0


class Outcome(StrEnum):
    """How one DNS query ended."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"

    @property
    def temporary(self) -> bool:
        """True when asking again later may give another answer (RFC 7208 §2.6.6 temperror)."""
        return self in (Outcome.SERVFAIL, Outcome.TIMEOUT)

    @property
    def void(self) -> bool:
        """NXDOMAIN or an empty answer: a "void lookup" (RFC 7208 §4.6.4)."""
        return self in (Outcome.NXDOMAIN, Outcome.NODATA)


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one query, as text.

    TXT: each record's character-strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2);
    A/AAAA: addresses; MX: `preference exchange` (exchange "." for a null MX, RFC 7505);
    PTR: the target name. Names are lower case without the final dot.
    """

    outcome: Outcome
    records: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MxHost:
    """One MX record (RFC 1035 §3.3.9)."""

    preference: int
    exchange: str

    @property
    def null(self) -> bool:
        """A null MX: "." as the exchange (RFC 7505 §3)."""
        return self.exchange in ("", ".")

    @classmethod
    def parse(cls, record: str) -> "MxHost":
        """`10 mx.example.com` -> MxHost(10, "mx.example.com")."""
        preference, _, exchange = record.partition(" ")
        return cls(int(preference), exchange.strip() or ".")


class Resolver(Protocol):
    """The DNS queries the domain check makes."""

    async def query(self, name: str, rdtype: RecordType) -> Answer:
        """The `rdtype` records of `name`; never raises."""
        ...


def reverse_name(address: IPAddress) -> str:
    """The PTR owner name of an address: `1.2.0.192.in-addr.arpa` (RFC 1035 §3.5, RFC 3596 §2.5)."""
    return address.reverse_pointer


def address_type(address: IPAddress) -> RecordType:
    """A for IPv4, AAAA for IPv6."""
    return "A" if address.version == 4 else "AAAA"


class DnspythonResolver:
    """`Resolver` over dnspython's asyncio stub resolver, without its cache (each report asks afresh)."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float = DEFAULT_TIMEOUT) -> None:
        self._resolver = stub_resolver(nameservers, timeout)
        self._timeout = timeout

    async def query(self, name: str, rdtype: RecordType) -> Answer:
        what = f"{name} {rdtype}"
        try:
            if not name.strip("."):
                raise dns.name.EmptyLabel
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:  # not a domain name: it cannot exist
            return Answer(Outcome.NXDOMAIN, detail=f"invalid name {what!r}: {exc}")
        try:
            async with asyncio.timeout(self._timeout + PER_SERVER_TIMEOUT):  # dnspython's lifetime, and a backstop
                answer = await self._resolver.resolve(
                    qname, dns.rdatatype.from_text(rdtype), search=False, raise_on_no_answer=False
                )
        except dns.resolver.NXDOMAIN:
            return Answer(Outcome.NXDOMAIN, detail=f"{what}: no such domain name (NXDOMAIN)")
        except (dns.resolver.LifetimeTimeout, TimeoutError):
            return Answer(Outcome.TIMEOUT, detail=f"{what}: timed out after {self._timeout:g}s")
        except dns.exception.DNSException as exc:
            return Answer(Outcome.SERVFAIL, detail=f"{what}: {exc}")
        if answer.rrset is None:
            return Answer(Outcome.NODATA, detail=f"{what}: no {rdtype} records")
        records = tuple(text for rdata in answer.rrset if (text := _text(rdata)) is not None)
        logger.debug("domain check DNS %s: %d records", what, len(records))
        return Answer(Outcome.OK, records)


def _text(rdata: object) -> str | None:
    if isinstance(rdata, TXT):
        return b"".join(rdata.strings).decode("utf-8", errors="replace")
    if isinstance(rdata, A | AAAA):
        return str(rdata.address)
    if isinstance(rdata, MX):
        return f"{rdata.preference} {_name(rdata.exchange)}"
    if isinstance(rdata, PTR):
        return _name(rdata.target)
    return None


def _name(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower() or "."


class MemoResolver:
    """Asks `resolver` each (name, type) once and shares the answer (for one report: no TTLs)."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self._answers: dict[tuple[str, RecordType], asyncio.Task[Answer]] = {}

    async def query(self, name: str, rdtype: RecordType) -> Answer:
        key = (name.lower().rstrip("."), rdtype)
        task = self._answers.get(key)
        if task is None:
            task = asyncio.ensure_future(self._resolver.query(name, rdtype))
            self._answers[key] = task
        return await asyncio.shield(task)
