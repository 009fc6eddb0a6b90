"""The mx, hostname and ptr:<ip> checks against a fake resolver."""

import ipaddress

from kubemta_mail_auth.domain_check.dns_queries import Outcome
from kubemta_mail_auth.domain_check.hostname_check import check_hostname
from kubemta_mail_auth.domain_check.model import Status
from kubemta_mail_auth.domain_check.mx_check import check_mx
from tests.harness.fake_dns import FakeDns

IP4 = ipaddress.ip_address("192.0.2.10")
IP6 = ipaddress.ip_address("2001:db8::10")


async def test_mx_hosts_with_addresses_are_ok():
    dns = FakeDns({"example.com": {"MX": ["20 mx2.example.com", "10 mx1.example.com"]}})
    dns.add("mx1.example.com", "A", "192.0.2.1")
    check = await check_mx("example.com", dns)
    assert check.status is Status.OK and check.found == ["10 mx1.example.com", "20 mx2.example.com"]
    assert "mx2.example.com has no A or AAAA record" in check.detail


async def test_null_mx_is_wrong_and_mixed_null_mx_too():
    check = await check_mx("example.com", FakeDns({"example.com": {"MX": ["0 ."]}}))
    assert check.status is Status.WRONG and "null MX (RFC 7505)" in check.detail and "bounces" in check.detail
    check = await check_mx("example.com", FakeDns({"example.com": {"MX": ["0 .", "10 mx.example.com"]}}))
    assert check.status is Status.WRONG and "next to other MX records" in check.detail


async def test_no_mx_is_missing_and_says_whether_implicit_mx_applies():
    check = await check_mx("example.com", FakeDns({"example.com": {"A": ["192.0.2.5"]}}))
    assert check.status is Status.MISSING and "implicit MX" in check.detail and "192.0.2.5" in check.detail
    check = await check_mx("example.com", FakeDns({"example.com": {"TXT": ["x"]}}))
    assert check.status is Status.MISSING and "no MX records and no A/AAAA record" in check.detail
    check = await check_mx("example.com", FakeDns())
    assert check.status is Status.MISSING and "does not exist" in check.detail


async def test_mx_hosts_without_addresses_are_wrong_and_dns_failures_unknown():
    dns = FakeDns({"example.com": {"MX": ["10 gone.example.com"]}})
    check = await check_mx("example.com", dns)
    assert check.status is Status.WRONG and "no MX host has an A or AAAA record" in check.detail
    dns.fail("gone.example.com", "A", Outcome.TIMEOUT)
    check = await check_mx("example.com", dns)
    assert check.status is Status.UNKNOWN and "cannot look up the addresses of gone.example.com" in check.detail
    dns.add("example.com", "MX", "20 mx.example.com")
    dns.add("mx.example.com", "AAAA", "2001:db8::25")
    check = await check_mx("example.com", dns)
    assert check.status is Status.OK and "the addresses of gone.example.com cannot be looked up now" in check.detail
    dns = FakeDns()
    dns.fail("example.com", "MX", Outcome.TIMEOUT)
    assert (await check_mx("example.com", dns)).status is Status.UNKNOWN


def mta_zone() -> FakeDns:
    dns = FakeDns({"mta.example.com": {"A": ["192.0.2.10"], "AAAA": ["2001:db8:0:0::10"]}})
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mta.example.com")
    dns.add(IP6.reverse_pointer, "PTR", "mta.example.com")
    return dns


async def test_hostname_and_forward_confirmed_ptr_are_ok():
    checks = await check_hostname("MTA.example.com.", [IP4, IP6], mta_zone())
    assert [(c.name, c.status) for c in checks] == [
        ("hostname", Status.OK),
        ("ptr:192.0.2.10", Status.OK),
        ("ptr:2001:db8::10", Status.OK),
    ]
    assert "forward-confirmed" in checks[1].detail


async def test_hostname_missing_or_without_a_sending_ip():
    checks = await check_hostname("mta.example.com", [IP4, IP6], FakeDns())
    assert checks[0].status is Status.MISSING
    assert checks[0].expected == "mta.example.com. IN A 192.0.2.10\nmta.example.com. IN AAAA 2001:db8::10"
    dns = FakeDns({"mta.example.com": {"A": ["192.0.2.99"]}})
    (hostname, _, _) = await check_hostname("mta.example.com", [IP4, IP6], dns)
    assert hostname.status is Status.WRONG and hostname.found == ["192.0.2.99"]
    assert "not to the sending IP(s) 192.0.2.10, 2001:db8::10" in hostname.detail


async def test_ptr_missing_other_name_or_not_forward_confirmed():
    dns = FakeDns({"mta.example.com": {"A": ["192.0.2.10"]}})
    (_, ptr) = await check_hostname("mta.example.com", [IP4], dns)
    assert ptr.status is Status.MISSING and ptr.expected == "10.2.0.192.in-addr.arpa. IN PTR mta.example.com."
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "host-192-0-2-10.provider.example")
    (_, ptr) = await check_hostname("mta.example.com", [IP4], dns)
    assert ptr.status is Status.WRONG and "names host-192-0-2-10.provider.example, not mta.example.com" in ptr.detail
    dns = FakeDns({"mta.example.com": {"A": ["192.0.2.99"]}})
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mta.example.com")
    (_, ptr) = await check_hostname("mta.example.com", [IP4], dns)
    assert ptr.status is Status.WRONG and "not forward-confirmed" in ptr.detail
    assert ptr.expected == "mta.example.com. IN A 192.0.2.10"


async def test_no_sending_ips_and_bad_hostname():
    (hostname,) = await check_hostname("mta.example.com", [], mta_zone())
    assert hostname.status is Status.UNKNOWN and "KUBEMTA_SENDING_IPS is not set" in hostname.detail
    (hostname,) = await check_hostname("localhost", [IP4], mta_zone())
    assert hostname.status is Status.WRONG and "not a fully qualified host name" in hostname.detail


async def test_dns_failures_are_unknown():
    dns = mta_zone()
    dns.fail("mta.example.com", "A", Outcome.TIMEOUT)
    dns.fail("10.2.0.192.in-addr.arpa", "PTR", Outcome.SERVFAIL)
    (hostname, ptr) = await check_hostname("mta.example.com", [IP4], dns)
    assert hostname.status is Status.UNKNOWN and ptr.status is Status.UNKNOWN
    dns = mta_zone()
    dns.fail("mta.example.com", "AAAA", Outcome.TIMEOUT)  # the PTR is fine, the way back cannot be confirmed
    (hostname, ptr) = await check_hostname("mta.example.com", [IP6], dns)
    assert hostname.status is Status.UNKNOWN and ptr.status is Status.UNKNOWN and "cannot be looked up" in ptr.detail
    (hostname,) = await check_hostname("mta.example.com", [], dns)
    assert hostname.status is Status.UNKNOWN and "cannot look up the addresses of mta.example.com" in hostname.detail
