"""check_host() (RFC 7208 §4-6) over a fake resolver: every mechanism, include/redirect, the results, and the
limits of §4.6.4 (10 DNS-querying terms checked before the 11th, 2 void lookups, 10 MX names)."""

import ipaddress

import pytest

from kubemta_mail_auth.domain_check.dns_queries import Outcome
from kubemta_mail_auth.domain_check.spf import SpfEvaluator, SpfResult
from tests.harness.fake_dns import FakeDns

IP = ipaddress.ip_address("192.0.2.10")
IP6 = ipaddress.ip_address("2001:db8::10")
SENDER = "postmaster@example.com"


async def evaluate(dns: FakeDns, ip=IP, domain="example.com", sender=SENDER):
    return await SpfEvaluator(dns, "mta.example.com").check_host(ip, domain, sender)


def spf(record: str) -> FakeDns:
    """example.com publishes `record` beside an unrelated TXT record."""
    return FakeDns({"example.com": {"TXT": ["some other text", record]}})


@pytest.mark.parametrize(
    ("record", "result"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", SpfResult.PASS),
        ("v=spf1 ip4:192.0.2.11 -all", SpfResult.FAIL),
        ("v=spf1 ip4:192.0.2.11 ~all", SpfResult.SOFTFAIL),
        ("v=spf1 ip4:192.0.2.11 ?all", SpfResult.NEUTRAL),
        ("v=spf1 ip4:192.0.2.11", SpfResult.NEUTRAL),  # no match, no redirect: the default
        ("v=spf1 -ip4:192.0.2.10 +all", SpfResult.FAIL),  # the first match decides
        ("v=spf1 ~ip4:192.0.2.10/32 all", SpfResult.SOFTFAIL),
        ("v=spf1 ip6:2001:db8::/32 -all", SpfResult.FAIL),  # an IPv4 client never matches ip6
    ],
)
async def test_results_follow_the_first_matching_qualifier(record, result):
    evaluation = await evaluate(spf(record))
    assert evaluation.result is result, evaluation


async def test_ipv6_and_ipv4_mapped_clients():
    dns = spf("v=spf1 ip6:2001:db8::/64 ip4:192.0.2.10 -all")
    assert (await evaluate(dns, ip=IP6)).result is SpfResult.PASS
    assert (await evaluate(dns, ip=ipaddress.ip_address("::ffff:192.0.2.10"))).result is SpfResult.PASS
    assert (await evaluate(dns, ip=ipaddress.ip_address("2001:db8:1::1"))).result is SpfResult.FAIL


async def test_no_record_and_several_records_and_bad_syntax():
    assert (await evaluate(FakeDns({"example.com": {"TXT": ["hello"]}}))).result is SpfResult.NONE
    assert (await evaluate(FakeDns())).result is SpfResult.NONE
    several = await evaluate(FakeDns({"example.com": {"TXT": ["v=spf1 -all", "v=spf1 ~all"]}}))
    assert several.result is SpfResult.PERMERROR and "2 SPF records" in several.reason
    bad = await evaluate(spf("v=spf1 ip4:192.0.2.300 -all"))
    assert bad.result is SpfResult.PERMERROR and "'ip4:192.0.2.300'" in bad.reason


async def test_a_and_mx_with_cidr_lengths():
    dns = spf("v=spf1 a:web.example.com/24 mx//64 -all")
    dns.add("web.example.com", "A", "192.0.2.99")
    assert (await evaluate(dns)).result is SpfResult.PASS
    dns = spf("v=spf1 a -mx -all")
    dns.add("example.com", "MX", "10 mx1.example.com", "20 mx2.example.com")
    dns.add("mx2.example.com", "A", "192.0.2.10")
    dns.add("mx2.example.com", "AAAA", "2001:db8::10")
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.FAIL and "'-mx'" in evaluation.reason
    assert (await evaluate(dns, ip=IP6)).result is SpfResult.FAIL
    assert ("example.com", "A") in dns.queries and ("mx1.example.com", "A") in dns.queries


async def test_include_matches_only_on_pass_and_none_is_permerror():
    dns = spf("v=spf1 include:_a.example.net include:_b.example.net -all")
    dns.add("_a.example.net", "TXT", "v=spf1 ip4:198.51.100.0/24 -all")  # fail inside: no match, go on
    dns.add("_b.example.net", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.PASS and "_b.example.net" in evaluation.reason
    assert evaluation.dns_terms == 2
    dns = spf("v=spf1 include:_none.example.net -all")
    dns.add("_none.example.net", "TXT", "not spf")
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.PERMERROR and "include:_none.example.net" in evaluation.reason


async def test_redirect_is_followed_after_the_mechanisms_and_a_missing_target_is_permerror():
    dns = spf("v=spf1 ip4:198.51.100.1 redirect=_spf.example.net")
    dns.add("_spf.example.net", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    assert (await evaluate(dns)).result is SpfResult.PASS
    dns = spf("v=spf1 redirect=_gone.example.net")
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.PERMERROR and "redirect=_gone.example.net" in evaluation.reason
    dns = spf("v=spf1 -all redirect=_spf.example.net")  # all matches first: redirect never looked at
    assert (await evaluate(dns)).result is SpfResult.FAIL and ("_spf.example.net", "TXT") not in dns.queries


async def test_temperror_propagates_from_an_include():
    dns = spf("v=spf1 include:_slow.example.net -all")
    dns.fail("_slow.example.net", "TXT", Outcome.TIMEOUT)
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.TEMPERROR and "_slow.example.net" in evaluation.reason
    dns = FakeDns()
    dns.fail("example.com", "TXT", Outcome.SERVFAIL)
    assert (await evaluate(dns)).result is SpfResult.TEMPERROR


async def test_exists_with_macros_and_the_sender():
    dns = spf("v=spf1 exists:%{ir}.%{l}._spf.%{d} -all")
    dns.add("10.2.0.192.postmaster._spf.example.com", "A", "127.0.0.2")
    assert (await evaluate(dns)).result is SpfResult.PASS
    assert (await evaluate(dns, sender="someone@example.com")).result is SpfResult.FAIL


async def test_ptr_matches_validated_names_only():
    dns = spf("v=spf1 ptr:example.com -all")
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "evil.example.com.attacker.test", "mta.example.com")
    dns.add("evil.example.com.attacker.test", "A", "192.0.2.10")
    dns.add("mta.example.com", "A", "192.0.2.10")
    assert (await evaluate(dns)).result is SpfResult.PASS
    dns = spf("v=spf1 ptr -all")
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mta.example.com")
    dns.add("mta.example.com", "A", "192.0.2.99")  # not forward-confirmed
    assert (await evaluate(dns)).result is SpfResult.FAIL


async def test_p_macro_uses_the_validated_name():
    dns = spf("v=spf1 exists:%{p}.allowed.example.com -all")
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "mta.example.com")
    dns.add("mta.example.com", "A", "192.0.2.10")
    dns.add("mta.example.com.allowed.example.com", "A", "127.0.0.2")
    assert (await evaluate(dns)).result is SpfResult.PASS


def include_chain(length: int, final: str) -> FakeDns:
    """example.com includes i1, i1 includes i2, ... i<length> holds `final`."""
    dns = spf("v=spf1 include:i1.example.net -all")
    for index in range(1, length):
        dns.add(f"i{index}.example.net", "TXT", f"v=spf1 include:i{index + 1}.example.net -all")
    dns.add(f"i{length}.example.net", "TXT", final)
    return dns


async def test_ten_dns_terms_are_allowed_and_the_eleventh_is_permerror_before_its_lookup():
    ten = await evaluate(include_chain(10, "v=spf1 ip4:192.0.2.10 -all"))
    assert ten.result is SpfResult.PASS and ten.dns_terms == 10
    dns = include_chain(10, "v=spf1 a:last.example.net ip4:192.0.2.10 -all")
    dns.add("last.example.net", "A", "192.0.2.10")
    eleven = await evaluate(dns)
    assert eleven.result is SpfResult.PERMERROR and eleven.dns_terms == 10
    assert "more than 10 DNS-querying terms" in eleven.reason and "'a:last.example.net'" in eleven.reason
    assert ("last.example.net", "A") not in dns.queries


@pytest.mark.parametrize(
    ("redirected", "result", "terms"), [("a", SpfResult.PASS, 10), ("a a", SpfResult.PERMERROR, 10)]
)
async def test_terms_of_all_nested_records_and_redirects_count(redirected, result, terms):
    dns = spf("v=spf1 a mx ptr exists:x.example.com include:_i.example.net redirect=_r.example.net")
    dns.add("_i.example.net", "TXT", "v=spf1 a a a -all")
    dns.add("_r.example.net", "TXT", f"v=spf1 {redirected} ip4:192.0.2.10")
    for name in ("example.com", "_i.example.net", "_r.example.net"):
        dns.add(name, "A", "198.51.100.1")
    dns.add("example.com", "MX", "10 example.com")
    dns.add("10.2.0.192.in-addr.arpa", "PTR", "other.example.org")
    evaluation = await evaluate(dns)
    # 4 terms + include + its 3 + redirect = 9, then the redirect target's `a` terms: the 10th is allowed, not the 11th
    assert (evaluation.result, evaluation.dns_terms, evaluation.void_lookups) == (result, terms, 1), evaluation


async def test_two_void_lookups_are_allowed_the_third_is_permerror():
    dns = spf("v=spf1 a:gone1.example.com a:gone2.example.com ip4:192.0.2.10 -all")
    assert (await evaluate(dns)).result is SpfResult.PASS
    dns = spf("v=spf1 a:gone1.example.com mx:gone2.example.com exists:gone3.example.com ip4:192.0.2.10 -all")
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.PERMERROR and evaluation.void_lookups == 3
    assert "void lookups" in evaluation.reason and "exists:gone3.example.com" in evaluation.reason


async def test_more_than_ten_mx_names_is_permerror():
    dns = spf("v=spf1 mx -all")
    dns.add("example.com", "MX", *(f"{i} mx{i}.example.com" for i in range(11)))
    evaluation = await evaluate(dns)
    assert evaluation.result is SpfResult.PERMERROR and "11 MX records" in evaluation.reason
    dns = spf("v=spf1 mx -all")
    dns.add("example.com", "MX", *(f"{i} mx{i}.example.com" for i in range(10)))
    dns.add("mx9.example.com", "A", "192.0.2.10")
    assert (await evaluate(dns)).result is SpfResult.PASS


async def test_invalid_domains_give_none():
    assert (await evaluate(FakeDns(), domain="localhost")).result is SpfResult.NONE
    assert (await evaluate(FakeDns(), domain="a..example.com")).result is SpfResult.NONE
    assert (await evaluate(FakeDns(), domain=("x" * 64) + ".example.com")).result is SpfResult.NONE
