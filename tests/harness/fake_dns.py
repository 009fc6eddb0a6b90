"""An in-memory `Resolver` for the domain check's unit tests: a dict of records, and the questions asked.

    dns = FakeDns({"example.com": {"TXT": ["v=spf1 -all"], "MX": ["10 mx.example.com"]}})
    dns.fail("slow.example.com", "TXT", Outcome.TIMEOUT)

A name with records of some type answers NODATA for the others; an unknown name NXDOMAIN.
"""

from kubemta_mail_auth.domain_check.dns_queries import Answer, Outcome, RecordType


class FakeDns:
    """`Resolver` over `zone` (name -> type -> records as the real resolver renders them)."""

    def __init__(self, zone: dict[str, dict[str, list[str]]] | None = None) -> None:
        self.zone: dict[str, dict[str, list[str]]] = {}
        self.failures: dict[tuple[str, str], Outcome] = {}
        self.queries: list[tuple[str, str]] = []
        for name, types in (zone or {}).items():
            for rdtype, records in types.items():
                self.add(name, rdtype, *records)

    def add(self, name: str, rdtype: str, *records: str) -> None:
        """Add `records` of `rdtype` at `name`."""
        self.zone.setdefault(name.lower().rstrip("."), {}).setdefault(rdtype, []).extend(records)

    def fail(self, name: str, rdtype: str, outcome: Outcome) -> None:
        """Make queries for `name` `rdtype` end with `outcome` (TIMEOUT or SERVFAIL)."""
        self.failures[(name.lower().rstrip("."), rdtype)] = outcome

    async def query(self, name: str, rdtype: RecordType) -> Answer:
        key = (name.lower().rstrip("."), rdtype)
        self.queries.append(key)
        if key in self.failures:
            return Answer(self.failures[key], detail=f"{name} {rdtype}: {self.failures[key].value}")
        types = self.zone.get(key[0])
        if types is None:
            return Answer(Outcome.NXDOMAIN, detail=f"{name} {rdtype}: NXDOMAIN")
        records = types.get(rdtype, [])
        if not records:
            return Answer(Outcome.NODATA, detail=f"{name} {rdtype}: no records")
        return Answer(Outcome.OK, tuple(records))
