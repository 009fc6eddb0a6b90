"""The decisions of `mx.resolve_domain` and `mx.resolve_host`, pinned as whole results: which exchangers
at which preference, implicit or not, complete or not, how long the answer may be cached, and for a
failure whether it is temporary, its RFC 3463 status and the diagnostic a sender reads in the bounce."""

from kubemta_dns_resolver.lookup import AddressType, LookupResult, LookupStatus, MxRecord
from kubemta_dns_resolver.mx import (
    STATUS_NO_ROUTE,
    STATUS_NOT_FOUND,
    STATUS_NULL_MX,
    STATUS_TEMPORARY,
    Destination,
    Exchange,
    Failure,
    resolve_domain,
    resolve_host,
)


class Zone:
    """A `DnsLookup` answering from a table of results; a name not in the table is NXDOMAIN (TTL 30)."""

    def __init__(self) -> None:
        self.mx_answers: dict[str, LookupResult[MxRecord]] = {}
        self.address_answers: dict[tuple[str, AddressType], LookupResult[str]] = {}

    def mx_records(self, name: str, records: list[tuple[int, str]], ttl: float = 300.0) -> None:
        self.mx_answers[name] = LookupResult(
            LookupStatus.OK, tuple(MxRecord(preference, host) for preference, host in records), ttl
        )

    def mx_status(self, name: str, status: LookupStatus, ttl: float = 0.0) -> None:
        self.mx_answers[name] = LookupResult(status, ttl=ttl, detail=f"{name} MX {status.value}")

    def address(self, name: str, rdtype: AddressType, addresses: list[str], ttl: float = 300.0) -> None:
        self.address_answers[(name, rdtype)] = LookupResult(LookupStatus.OK, tuple(addresses), ttl)

    def address_status(self, name: str, rdtype: AddressType, status: LookupStatus, ttl: float = 0.0) -> None:
        self.address_answers[(name, rdtype)] = LookupResult(status, ttl=ttl, detail=f"{name} {rdtype} {status.value}")

    def no_address(self, name: str, ttl: float = 30.0) -> None:
        """`name` exists without A or AAAA records (NODATA)."""
        self.address_status(name, "A", LookupStatus.NODATA, ttl)
        self.address_status(name, "AAAA", LookupStatus.NODATA, ttl)

    async def mx(self, name: str) -> LookupResult[MxRecord]:
        return self.mx_answers.get(name, LookupResult(LookupStatus.NXDOMAIN, ttl=30.0, detail=f"{name} MX nxdomain"))

    async def addresses(self, name: str, rdtype: AddressType) -> LookupResult[str]:
        default: LookupResult[str] = LookupResult(LookupStatus.NXDOMAIN, ttl=30.0, detail=f"{name} {rdtype} nxdomain")
        return self.address_answers.get((name, rdtype), default)


def temporary(diagnostic: str, *, implicit: bool = False) -> Failure:
    return Failure(
        True, STATUS_TEMPORARY, f"Host or domain name lookup failed temporarily ({diagnostic})", 0.0, implicit
    )


# -- resolve_domain: MX records ------------------------------------------------------------------------------


async def test_exchangers_by_preference_keep_dns_order_among_equals_and_the_smallest_ttl() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(20, "b.example.com"), (10, "c.example.com"), (20, "a.example.com")], ttl=600)
    zone.address("a.example.com", "A", ["192.0.2.1"], ttl=500)
    zone.address("b.example.com", "A", ["192.0.2.2"], ttl=400)
    zone.address("b.example.com", "AAAA", ["2001:db8::2"], ttl=900)
    zone.address("c.example.com", "AAAA", ["2001:db8::3"], ttl=700)
    zone.address_status("c.example.com", "A", LookupStatus.NODATA, ttl=5)

    assert await resolve_domain(zone, "example.com") == Destination(
        (
            Exchange("c.example.com", 10, ("2001:db8::3",)),
            Exchange("b.example.com", 20, ("192.0.2.2", "2001:db8::2")),
            Exchange("a.example.com", 20, ("192.0.2.1",)),
        ),
        implicit=False,
        ttl=400.0,  # a negative answer beside a positive one does not shorten the TTL
        complete=True,
    )


async def test_the_mx_ttl_bounds_the_destination_ttl() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, "mx.example.com")], ttl=60)
    zone.address("mx.example.com", "A", ["192.0.2.1"], ttl=3600)
    result = await resolve_domain(zone, "example.com")
    assert isinstance(result, Destination) and result.ttl == 60.0


async def test_an_exchanger_without_address_is_left_out() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, "gone.example.com"), (20, "mx.example.com")])
    zone.no_address("gone.example.com", ttl=1)
    zone.address("mx.example.com", "A", ["192.0.2.1"])
    assert await resolve_domain(zone, "example.com") == Destination(
        (Exchange("mx.example.com", 20, ("192.0.2.1",)),), False, 300.0, complete=True
    )


async def test_a_temporary_failure_for_one_exchanger_makes_the_destination_incomplete() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, "down.example.com"), (20, "mx.example.com")])
    zone.address_status("down.example.com", "A", LookupStatus.TIMEOUT)
    zone.address_status("down.example.com", "AAAA", LookupStatus.TIMEOUT)
    zone.address("mx.example.com", "A", ["192.0.2.1"])
    assert await resolve_domain(zone, "example.com") == Destination(
        (Exchange("mx.example.com", 20, ("192.0.2.1",)),), False, 300.0, complete=False
    )


async def test_the_null_mx_is_a_permanent_5_1_10_for_its_ttl() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(0, ".")], ttl=3600)
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NULL_MX, "Recipient address has null MX", 3600.0
    )


async def test_only_root_exchangers_that_are_no_null_mx_give_no_route_5_4_4() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, ".")], ttl=1200)  # "." at preference 10: not RFC 7505's form
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NO_ROUTE, "unable to route: no address for any MX host", 1200.0
    )
    zone.mx_records("example.com", [(0, "."), (0, ".")], ttl=1200)  # two records: not RFC 7505's form either
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NO_ROUTE, "unable to route: no address for any MX host", 1200.0
    )


async def test_no_address_for_any_exchanger_is_a_permanent_5_4_4_for_the_shortest_ttl() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, "a.example.com"), (20, "b.example.com")], ttl=900)
    zone.no_address("a.example.com", ttl=120)
    zone.no_address("b.example.com", ttl=45)
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NO_ROUTE, "unable to route: no address for any MX host", 45.0
    )


async def test_no_address_with_temporary_failures_is_temporary_and_names_them() -> None:
    zone = Zone()
    zone.mx_records("example.com", [(10, "a.example.com"), (20, "b.example.com"), (30, "c.example.com")])
    zone.address_status("a.example.com", "A", LookupStatus.SERVFAIL)
    zone.address_status("a.example.com", "AAAA", LookupStatus.NODATA)
    zone.no_address("b.example.com")
    zone.address_status("c.example.com", "A", LookupStatus.TIMEOUT)
    zone.address_status("c.example.com", "AAAA", LookupStatus.TIMEOUT)
    assert await resolve_domain(zone, "example.com") == temporary(
        "no address for any MX host: a.example.com A servfail; a.example.com AAAA nodata; "
        "c.example.com A timeout; c.example.com AAAA timeout"
    )


# -- resolve_domain: the MX query fails -------------------------------------------------------------------------


async def test_a_failed_mx_query_is_temporary_4_4_3_with_its_detail() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.SERVFAIL)
    assert await resolve_domain(zone, "example.com") == temporary("example.com MX servfail")
    zone.mx_status("example.com", LookupStatus.TIMEOUT)
    assert await resolve_domain(zone, "example.com") == temporary("example.com MX timeout")


async def test_nxdomain_is_a_permanent_5_1_2_for_the_negative_ttl() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NXDOMAIN, ttl=90)
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NOT_FOUND, "Host or domain name not found (example.com MX nxdomain)", 90.0
    )


async def test_nxdomain_takes_the_status_the_caller_gives() -> None:
    zone = Zone()
    zone.mx_status("relay.example.net", LookupStatus.NXDOMAIN, ttl=90)
    result = await resolve_domain(zone, "relay.example.net", nxdomain_status=STATUS_NO_ROUTE)
    assert isinstance(result, Failure) and (result.temporary, result.status) == (False, STATUS_NO_ROUTE)


# -- resolve_domain: no MX records, the implicit MX (RFC 5321 section 5.1) ------------------------------------


async def test_no_mx_records_route_to_the_name_itself_at_preference_0() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NODATA, ttl=100)
    zone.address("example.com", "A", ["192.0.2.7"], ttl=300)
    zone.address("example.com", "AAAA", ["2001:db8::7"], ttl=50)
    assert await resolve_domain(zone, "example.com") == Destination(
        (Exchange("example.com", 0, ("192.0.2.7", "2001:db8::7")),), implicit=True, ttl=50.0, complete=True
    )


async def test_the_implicit_mx_with_one_family_failing_is_incomplete() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NODATA, ttl=100)
    zone.address("example.com", "A", ["192.0.2.7"], ttl=300)
    zone.address_status("example.com", "AAAA", LookupStatus.SERVFAIL)
    assert await resolve_domain(zone, "example.com") == Destination(
        (Exchange("example.com", 0, ("192.0.2.7",)),), implicit=True, ttl=100.0, complete=False
    )


async def test_the_implicit_mx_failing_temporarily_is_temporary() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NODATA)
    zone.address_status("example.com", "A", LookupStatus.TIMEOUT)
    zone.address_status("example.com", "AAAA", LookupStatus.NODATA)
    assert await resolve_domain(zone, "example.com") == temporary(
        "example.com A timeout; example.com AAAA nodata", implicit=True
    )


async def test_the_implicit_mx_vanishing_is_not_found_for_the_shorter_ttl() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NODATA, ttl=100)
    zone.address_status("example.com", "A", LookupStatus.NXDOMAIN, ttl=40)
    zone.address_status("example.com", "AAAA", LookupStatus.NXDOMAIN, ttl=40)
    assert await resolve_domain(zone, "example.com") == Failure(
        False,
        STATUS_NOT_FOUND,
        "Host or domain name not found (example.com A nxdomain; example.com AAAA nxdomain)",
        40.0,
        implicit=True,
    )
    relay = await resolve_domain(zone, "example.com", nxdomain_status=STATUS_NO_ROUTE)
    assert isinstance(relay, Failure) and (relay.temporary, relay.status) == (False, STATUS_NO_ROUTE)


async def test_a_name_without_mx_and_address_is_no_route_5_4_4() -> None:
    zone = Zone()
    zone.mx_status("example.com", LookupStatus.NODATA, ttl=20)
    zone.no_address("example.com", ttl=70)
    assert await resolve_domain(zone, "example.com") == Failure(
        False, STATUS_NO_ROUTE, "unable to route: example.com has no MX and no address", 20.0, implicit=True
    )


# -- resolve_host: a [host] next hop -------------------------------------------------------------------------


async def test_a_host_is_its_own_only_exchanger() -> None:
    zone = Zone()
    zone.address("relay.example.net", "A", ["192.0.2.9"], ttl=80)
    zone.address("relay.example.net", "AAAA", ["2001:db8::9"], ttl=90)
    assert await resolve_host(zone, "relay.example.net") == Destination(
        (Exchange("relay.example.net", 0, ("192.0.2.9", "2001:db8::9")),), implicit=False, ttl=80.0, complete=True
    )


async def test_a_host_with_one_family_failing_is_incomplete() -> None:
    zone = Zone()
    zone.address("relay.example.net", "A", ["192.0.2.9"], ttl=80)
    zone.address_status("relay.example.net", "AAAA", LookupStatus.TIMEOUT)
    assert await resolve_host(zone, "relay.example.net") == Destination(
        (Exchange("relay.example.net", 0, ("192.0.2.9",)),), implicit=False, ttl=80.0, complete=False
    )


async def test_a_host_failing_temporarily_is_temporary() -> None:
    zone = Zone()
    zone.address_status("relay.example.net", "A", LookupStatus.SERVFAIL)
    zone.address_status("relay.example.net", "AAAA", LookupStatus.SERVFAIL)
    assert await resolve_host(zone, "relay.example.net") == temporary(
        "relay.example.net A servfail; relay.example.net AAAA servfail"
    )


async def test_a_host_that_does_not_exist_is_no_route_5_4_4_not_a_bad_recipient_domain() -> None:
    zone = Zone()
    assert await resolve_host(zone, "relay.example.net") == Failure(
        False,
        STATUS_NO_ROUTE,
        "Host or domain name not found (relay.example.net A nxdomain; relay.example.net AAAA nxdomain)",
        30.0,
    )


async def test_a_host_without_address_is_no_route_5_4_4() -> None:
    zone = Zone()
    zone.no_address("relay.example.net", ttl=25)
    assert await resolve_host(zone, "relay.example.net") == Failure(
        False, STATUS_NO_ROUTE, "unable to route: no address for relay.example.net", 25.0
    )
