"""check_domain as a whole: a complete correct zone is ok, names are validated, DNS failures and bugs become
`unknown` checks instead of exceptions; plus the resolver pieces (memo, real resolver timeout) and zone lines."""

import asyncio
import ipaddress
import socket
from pathlib import Path

import pytest

from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.dkim.records import public_key, record_value
from kubemta_mail_auth.domain_check import (
    CheckConfig,
    DnspythonResolver,
    DomainReport,
    InvalidDomainError,
    Status,
    check_domain,
    normalize_domain,
)
from kubemta_mail_auth.domain_check import checker as checker_module
from kubemta_mail_auth.domain_check.dns_queries import Answer, MemoResolver, Outcome, RecordType
from kubemta_mail_auth.domain_check.zone import txt_line
from tests.harness.fake_dns import FakeDns

IP = ipaddress.ip_address("192.0.2.10")
ED25519_SEED = b"0JYRn8Dd5gCgiUpXN3ZpHmZ7Xw8ANG8tKm8pYlb4xGE=\n"


@pytest.fixture
def keys(tmp_path: Path) -> PublicKeyStore:
    """The public key only, as the ingress has it."""
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "s1.pub").write_text(record_value(*public_key(ED25519_SEED)) + "\n")
    return PublicKeyStore(tmp_path)


def good_zone() -> FakeDns:
    algorithm, public = public_key(ED25519_SEED)
    return FakeDns(
        {
            "example.com": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"], "MX": ["10 mx.example.com"]},
            "s1._domainkey.example.com": {"TXT": [record_value(algorithm, public)]},
            "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
            "mx.example.com": {"A": ["192.0.2.20"]},
            "mta.example.com": {"A": ["192.0.2.10"]},
            "10.2.0.192.in-addr.arpa": {"PTR": ["mta.example.com"]},
        }
    )


async def test_a_correct_zone_is_ok(keys):
    config = CheckConfig("mta.example.com", (IP,), keys)
    report = await check_domain("Example.COM.", config, good_zone())
    assert [(c.name, c.status) for c in report.checks] == [
        ("dkim:s1", Status.OK),
        ("spf", Status.OK),
        ("dmarc", Status.OK),
        ("mx", Status.OK),
        ("hostname", Status.OK),
        ("ptr:192.0.2.10", Status.OK),
    ]
    assert report.ok and report.domain == "example.com"
    assert DomainReport.model_validate_json(report.model_dump_json()) == report


async def test_every_lookup_timing_out_gives_unknown_checks_not_an_exception(keys):
    class Silent:
        async def query(self, name: str, rdtype: RecordType) -> Answer:
            return Answer(Outcome.TIMEOUT, detail=f"{name} {rdtype}: timed out after 1s")

    report = await check_domain("example.com", CheckConfig("mta.example.com", (IP,), keys), Silent())
    assert not report.ok and {c.status for c in report.checks} == {Status.UNKNOWN}


async def test_a_bug_in_one_check_is_reported_as_unknown_and_the_others_still_run(keys, monkeypatch, caplog):
    async def broken(*args: object) -> object:
        raise KeyError("bug")

    monkeypatch.setattr(checker_module, "check_mx", broken)
    report = await check_domain("example.com", CheckConfig("mta.example.com", (IP,), keys), good_zone())
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["mx"] is Status.UNKNOWN and statuses["spf"] is Status.OK and not report.ok
    assert "domain check mx failed" in caplog.text


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        (" mail.example.org ", "mail.example.org"),
    ],
)
def test_names_are_normalized(text, normalized):
    assert normalize_domain(text) == normalized


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("com", "not a fully qualified"),
        ("a..example.com", "empty label"),
        ("exa_mple.com", "invalid label"),
        ("-example.com", "invalid label"),
        ("192.0.2.1", "IP address"),
        ("x" * 64 + ".com", "longer than 63"),
        (".".join(["abcdefghi"] * 26), "longer than 253"),
        ("xn--zz.example", "invalid A-label"),
        ("ｅxample.com", "not in IDNA normal form"),
        ("example.com/x", "invalid label"),
    ],
)
async def test_invalid_names_are_refused_before_any_lookup(text, message):
    dns = FakeDns()
    with pytest.raises(InvalidDomainError, match=message):
        await check_domain(text, CheckConfig("mta.example.com"), dns)
    assert dns.queries == []


async def test_memo_resolver_asks_each_question_once():
    dns = FakeDns({"example.com": {"TXT": ["x"]}})
    memo = MemoResolver(dns)
    answers = await asyncio.gather(
        *(memo.query(name, "TXT") for name in ("example.com", "EXAMPLE.com.", "example.com"))
    )
    assert [a.records for a in answers] == [("x",)] * 3 and dns.queries == [("example.com", "TXT")]


async def test_the_real_resolver_times_out_within_its_bound():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # a name server that never answers
        silent.bind(("127.0.0.1", 0))
        resolver = DnspythonResolver([("127.0.0.1", silent.getsockname()[1])], timeout=0.3)
        async with asyncio.timeout(5):
            answer = await resolver.query("example.com", "TXT")
    assert answer.outcome is Outcome.TIMEOUT and "timed out" in answer.detail
    assert (await resolver.query("bad..name", "A")).outcome is Outcome.NXDOMAIN


def test_txt_lines_split_long_values_into_character_strings():
    assert txt_line("example.com", 'v=spf1 "q" -all') == 'example.com. IN TXT "v=spf1 \\"q\\" -all"'
    line = txt_line("example.com", "v=spf1 " + "ip4:192.0.2.1 " * 30 + "-all")
    assert line.startswith('example.com. IN TXT ( "v=spf1 ') and line.count('"') == 4  # 431 octets: two strings
