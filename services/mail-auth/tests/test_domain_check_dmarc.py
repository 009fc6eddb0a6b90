"""The dmarc check (RFC 7489): record syntax, discovery at the domain and its parents, several records,
records receivers discard, and the suggested record."""

import pytest

from kubemta_mail_auth.domain_check.dmarc_check import check_dmarc, parents
from kubemta_mail_auth.domain_check.dmarc_record import DmarcSyntaxError, is_dmarc_record, parse_dmarc
from kubemta_mail_auth.domain_check.dns_queries import Outcome
from kubemta_mail_auth.domain_check.model import Status
from tests.harness.fake_dns import FakeDns

SUGGESTED = '_dmarc.example.com. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.com"'


def test_a_full_record_parses_with_defaults():
    policy = parse_dmarc("v=DMARC1;p=reject; sp=quarantine;pct=50;adkim=s;rua=mailto:a@example.com,mailto:b@x.test!10m")
    assert (policy.p, policy.sp, policy.pct, policy.adkim, policy.aspf) == ("reject", "quarantine", 50, "s", "r")
    assert policy.rua == ("mailto:a@example.com", "mailto:b@x.test!10m")
    assert parse_dmarc("v=DMARC1; p=none").summary() == "p=none sp=none pct=100 adkim=r aspf=r"
    assert parse_dmarc("v=DMARC1; p=REJECT; future=tag").p == "reject"  # unknown tags are ignored


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("v=DMARC1; rua=mailto:a@example.com", "no p= tag"),
        ("v=DMARC1; p=block", "p=block is not one of none, quarantine, reject"),
        ("v=DMARC1; p=none; sp=maybe", "sp=maybe"),
        ("v=DMARC1; p=none; pct=101", "pct=101"),
        ("v=DMARC1; p=none; pct=-1", "pct=-1"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; rua=postmaster@example.com", "not a URI"),
        ("v=DMARC1; p=none; fo=2", "fo=2"),
        ("v=DMARC1; p=none; p=reject", "appears more than once"),
        ("v=DMARC1; p=none; broken", "malformed tag"),
    ],
)
def test_invalid_records(record, message):
    with pytest.raises(DmarcSyntaxError, match=message):
        parse_dmarc(record)


@pytest.mark.parametrize(
    ("text", "is_dmarc"),
    [("v=DMARC1; p=none", True), ("v = DMARC1;p=none", True), ("v=DMARC1", True), ("v=dmarc1; p=none", False),
     ("p=none; v=DMARC1", False), ("v=DMARC10; p=none", False), ("v=spf1 -all", False)],
)  # fmt: skip
def test_a_dmarc_record_starts_with_the_version_tag(text, is_dmarc):
    assert is_dmarc_record(text) is is_dmarc


def test_the_parent_walk_stops_at_two_labels():
    assert parents("a.b.example.com") == ["b.example.com", "example.com"]
    assert parents("example.com") == []


async def test_own_record_is_ok_with_its_policy():
    dns = FakeDns({"_dmarc.example.com": {"TXT": ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"]}})
    check = await check_dmarc("example.com", dns)
    assert check.status is Status.OK and check.found == ["v=DMARC1; p=quarantine; rua=mailto:d@example.com"]
    assert (
        "p=quarantine sp=quarantine pct=100 adkim=r aspf=r" in check.detail and "mailto:d@example.com" in check.detail
    )


async def test_a_subdomain_inherits_the_parent_policy_through_sp():
    dns = FakeDns({"_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; sp=none"]}})
    check = await check_dmarc("news.mail.example.com", dns)
    assert check.status is Status.OK
    assert (
        "inherited from _dmarc.example.com" in check.detail and "none applies to news.mail.example.com" in check.detail
    )
    assert [q for q in dns.queries] == [
        ("_dmarc.news.mail.example.com", "TXT"),
        ("_dmarc.mail.example.com", "TXT"),
        ("_dmarc.example.com", "TXT"),
    ]


async def test_missing_everywhere_suggests_a_monitoring_record():
    check = await check_dmarc("example.com", FakeDns({"example.com": {"TXT": ["v=spf1 -all"]}}))
    assert check.status is Status.MISSING and check.expected == SUGGESTED
    check = await check_dmarc("sub.example.com", FakeDns())
    assert check.status is Status.MISSING and "or its parents (_dmarc.example.com)" in check.detail


@pytest.mark.parametrize(
    ("records", "detail"),
    [
        (["v=DMARC1; p=none", "v=DMARC1; p=reject"], "2 DMARC records"),
        (["v=DMARC1; pct=100"], "no p= tag"),
        (["v=dmarc1; p=reject"], "does not start with 'v=DMARC1'"),
    ],
)
async def test_broken_records_are_wrong(records, detail):
    check = await check_dmarc("example.com", FakeDns({"_dmarc.example.com": {"TXT": records}}))
    assert check.status is Status.WRONG and detail in check.detail and check.found == records
    assert check.expected == SUGGESTED


async def test_a_dns_failure_is_unknown():
    dns = FakeDns()
    dns.fail("_dmarc.example.com", "TXT", Outcome.SERVFAIL)
    assert (await check_dmarc("example.com", dns)).status is Status.UNKNOWN
