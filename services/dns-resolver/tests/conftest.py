"""Fixtures for the dns-resolver unit tests: an in-memory DNS (the `DnsLookup` seam) and a clock."""

import pytest
from prometheus_client import REGISTRY

from kubemta_dns_resolver.lookup import AddressType, LookupResult, LookupStatus, MxRecord


class FakeDns:
    """Answers from dictionaries; records every query. Unknown names are NXDOMAIN, known names without
    records of the asked type are NODATA."""

    def __init__(self) -> None:
        self.mx_records: dict[str, tuple[list[MxRecord], float]] = {}
        self.address_records: dict[tuple[str, str], tuple[list[str], float]] = {}
        self.failures: dict[tuple[str, str], LookupStatus] = {}
        self.queries: list[tuple[str, str]] = []
        self.negative_ttl = 30.0
        self.existing: set[str] = set()

    def add_name(self, name: str) -> None:
        """Make `name` exist without records (NODATA for every type)."""
        self.existing.add(name)

    def add_mx(self, name: str, records: list[tuple[int, str]], ttl: float = 300.0) -> None:
        self.mx_records[name] = ([MxRecord(pref, host) for pref, host in records], ttl)

    def add_address(self, name: str, rdtype: AddressType, addresses: list[str], ttl: float = 300.0) -> None:
        self.address_records[(name, rdtype)] = (addresses, ttl)

    def fail(self, name: str, rdtype: str, status: LookupStatus) -> None:
        self.failures[(name, rdtype)] = status

    def _known(self, name: str) -> bool:
        return name in self.existing or name in self.mx_records or any(key[0] == name for key in self.address_records)

    def _negative(self, name: str) -> LookupStatus:
        return LookupStatus.NODATA if self._known(name) else LookupStatus.NXDOMAIN

    async def mx(self, name: str) -> LookupResult[MxRecord]:
        self.queries.append((name, "MX"))
        if (name, "MX") in self.failures:
            return LookupResult(self.failures[(name, "MX")], detail=f"{name} MX failed")
        if name in self.mx_records:
            records, ttl = self.mx_records[name]
            return LookupResult(LookupStatus.OK, tuple(records), ttl)
        return LookupResult(self._negative(name), ttl=self.negative_ttl, detail=f"{name} MX negative")

    async def addresses(self, name: str, rdtype: AddressType) -> LookupResult[str]:
        self.queries.append((name, rdtype))
        if (name, rdtype) in self.failures:
            return LookupResult(self.failures[(name, rdtype)], detail=f"{name} {rdtype} failed")
        if (name, rdtype) in self.address_records:
            addresses, ttl = self.address_records[(name, rdtype)]
            return LookupResult(LookupStatus.OK, tuple(addresses), ttl)
        return LookupResult(self._negative(name), ttl=self.negative_ttl, detail=f"{name} {rdtype} negative")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def metric(name: str, **labels: str) -> float:
    """The current value of one sample in the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def fake_dns() -> FakeDns:
    return FakeDns()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def read_metric():
    return metric
