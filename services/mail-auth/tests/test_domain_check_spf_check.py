"""The spf check: the record found, its syntax, and check_host() for each sending IP; the suggested record."""

import ipaddress

import pytest

from kubemta_mail_auth.domain_check.dns_queries import Outcome
from kubemta_mail_auth.domain_check.model import Status
from kubemta_mail_auth.domain_check.spf_check import check_spf, suggested_record, with_addresses
from tests.harness.fake_dns import FakeDns

IP4 = ipaddress.ip_address("192.0.2.10")
IP6 = ipaddress.ip_address("2001:db8::10")


async def spf_check(records: list[str], ips=(IP4, IP6), dns: FakeDns | None = None):
    dns = dns or FakeDns()
    dns.add("example.com", "TXT", *records)
    return await check_spf("example.com", list(ips), "mta.example.com", dns)


def test_suggested_records():
    assert suggested_record([IP4, IP6]) == "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 ~all"
    assert with_addresses("v=spf1 include:_spf.example.net -all", [IP6]) == (
        "v=spf1 ip6:2001:db8::10 include:_spf.example.net -all"
    )
    assert with_addresses("v=spf1", [IP4]) == "v=spf1 ip4:192.0.2.10"


async def test_a_record_authorizing_every_sending_ip_is_ok():
    check = await spf_check(["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all", "other"])
    assert check.status is Status.OK and check.found == ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"]
    assert (
        "SPF passes for every sending IP: 192.0.2.10 (matched" in check.detail
        and "2001:db8::10 (matched" in check.detail
        and "0 of 10 DNS-querying terms" in check.detail
    )


async def test_missing_record_suggests_one_from_the_sending_ips():
    check = await spf_check(["google-site-verification=x"])
    assert check.status is Status.MISSING
    assert check.expected == 'example.com. IN TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 ~all"'
    check = await spf_check([], ips=())
    assert check.status is Status.MISSING and check.expected is None and "KUBEMTA_SENDING_IPS" in check.detail


async def test_a_sending_ip_not_authorized_is_wrong_naming_ip_and_result():
    check = await spf_check(["v=spf1 ip4:192.0.2.10 ~all"])
    assert check.status is Status.WRONG
    assert "2001:db8::10 is not authorized: softfail (matched '~all' in the record of example.com)" in check.detail
    assert "192.0.2.10" not in check.detail.replace("2001:db8::10", "")
    assert check.expected == 'example.com. IN TXT "v=spf1 ip6:2001:db8::10 ip4:192.0.2.10 ~all"'


@pytest.mark.parametrize(
    ("records", "detail"),
    [
        (["v=spf1 -all", "v=spf1 ~all"], "2 SPF records"),
        (["v=spf1 ip4:192.0.2.10 ipv6:2001:db8::10 -all"], "unknown mechanism 'ipv6:2001:db8::10'"),
        (["v=spf1 ip4:192.0.2.0/40 -all"], "invalid CIDR length /40 in 'ip4:192.0.2.0/40'"),
        (["v=spf1 +all"], "authorizes every server"),
        (["v=spf1 include:_spf.gone.example -all"], "permerror"),
    ],
)
async def test_broken_records_are_wrong(records, detail):
    check = await spf_check(records)
    assert check.status is Status.WRONG and detail in check.detail, check


async def test_too_many_lookups_is_wrong_even_without_sending_ips():
    dns = FakeDns()
    for index in range(1, 12):
        dns.add(f"i{index}.example.net", "TXT", f"v=spf1 include:i{index + 1}.example.net -all")
    check = await spf_check(["v=spf1 include:i1.example.net -all"], ips=(), dns=dns)
    assert check.status is Status.WRONG and "more than 10 DNS-querying terms" in check.detail


async def test_without_sending_ips_a_valid_record_is_unknown():
    check = await spf_check(["v=spf1 mx -all"], ips=())
    assert check.status is Status.UNKNOWN and "KUBEMTA_SENDING_IPS is not set" in check.detail


async def test_dns_failures_are_unknown():
    dns = FakeDns()
    dns.fail("example.com", "TXT", Outcome.TIMEOUT)
    assert (await check_spf("example.com", [IP4], "mta.example.com", dns)).status is Status.UNKNOWN
    dns = FakeDns()
    dns.fail("_spf.example.net", "TXT", Outcome.SERVFAIL)
    check = await spf_check(["v=spf1 include:_spf.example.net -all"], dns=dns)
    assert check.status is Status.UNKNOWN and "temperror" in check.detail
