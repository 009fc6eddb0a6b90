"""The domain check against a real authoritative name server (NSD on a random loopback address): a correct
sending domain is ok, and each broken variant reports exactly its problem, with the record to publish."""

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.domain_check import CheckConfig, DnspythonResolver, DomainReport, Status, check_domain
from tests.harness import domain_zone as dz
from tests.harness.dns_server import DnsServer, free_port, random_loopback_address

CHECK_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DnsServer, dz.DomainZones]]:
    address = random_loopback_address()
    net = address.rsplit(".", 1)[0]
    zones = dz.build_zones(Path(tmp_path_factory.mktemp("dkim")) / "keys", net)
    server = DnsServer(
        Path(tmp_path_factory.mktemp("nsd")), address, free_port(address), zones.zones, [dz.SERVFAIL_ZONE]
    )
    with server:
        yield server, zones


async def check(
    setup: tuple[DnsServer, dz.DomainZones],
    domain: str,
    *,
    hostname: str = dz.HOSTNAME,
    ips: tuple[str, ...] | None = None,
    private_keys: bool = False,
) -> DomainReport:
    """The report with the public keys only (the ingress' directory), or the `.key` + `.pub` directory."""
    server, zones = setup
    sending = (zones.sending_ip,) if ips is None else tuple(ipaddress.ip_address(ip) for ip in ips)
    keys_dir = zones.keys_dir if private_keys else zones.public_keys_dir
    config = CheckConfig(hostname, sending, PublicKeyStore(keys_dir))
    resolver = DnspythonResolver([(server.address, server.port)], timeout=3.0)
    async with asyncio.timeout(CHECK_TIMEOUT):
        return await check_domain(domain, config, resolver)


def problems(report: DomainReport) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks if c.status is not Status.OK}


def by_name(report: DomainReport, name: str):
    (found,) = [c for c in report.checks if c.name == name]
    return found


async def test_the_correct_domain_is_ok(setup):
    report = await check(setup, dz.GOOD)
    assert report.ok, report.model_dump_json(indent=2)
    assert [c.name for c in report.checks] == [
        "dkim:r1", "dkim:s1", "spf", "dmarc", "mx", "hostname", f"ptr:{setup[1].sending_ip}",
    ]  # fmt: skip
    rsa = by_name(report, "dkim:r1")
    assert len(rsa.found) == 1 and len(rsa.found[0]) > 255  # several TXT strings, joined
    assert by_name(report, "mx").found == [f"10 mx.{dz.ZONE}"]
    assert "p=reject" in by_name(report, "dmarc").detail


@pytest.mark.parametrize("domain", [dz.GOOD, dz.NO_DKIM, dz.WRONG_DKIM])
async def test_the_directory_with_private_keys_gives_the_same_dkim_verdicts(setup, domain):
    public, private = await check(setup, domain), await check(setup, domain, private_keys=True)

    def verdicts(report: DomainReport) -> list[tuple[str, Status, list[str], str | None]]:
        return [(c.name, c.status, c.found, c.expected) for c in report.checks if c.name.startswith("dkim")]

    assert verdicts(private) == verdicts(public) and verdicts(public)
    assert all(".pub)" in c.detail for c in public.checks if c.status is Status.OK and c.name.startswith("dkim"))


async def test_a_subdomain_inherits_dmarc_and_signs_with_the_parent_keys(setup):
    report = await check(setup, f"sub.{dz.GOOD}")
    dmarc = by_name(report, "dmarc")
    assert dmarc.status is Status.OK and f"inherited from _dmarc.{dz.GOOD}" in dmarc.detail
    assert by_name(report, "dkim:s1").status is Status.OK
    assert problems(report) == {"spf": Status.MISSING, "mx": Status.MISSING}  # sub.good has only an A record


async def test_missing_dkim_record(setup):
    report = await check(setup, dz.NO_DKIM)
    assert problems(report) == {"dkim:s1": Status.MISSING}
    dkim = by_name(report, "dkim:s1")
    assert dkim.expected is not None and dkim.expected.startswith(f"s1._domainkey.{dz.NO_DKIM}. IN TXT (")


async def test_wrong_dkim_key(setup):
    report = await check(setup, dz.WRONG_DKIM)
    assert problems(report) == {"dkim:s1": Status.WRONG}
    dkim = by_name(report, "dkim:s1")
    assert "publishes another ed25519 key" in dkim.detail and dkim.found and dkim.expected
    assert dkim.found[0] not in dkim.expected


async def test_spf_without_the_sending_ip(setup):
    report = await check(setup, dz.SPF_WITHOUT_IP)
    assert problems(report) == {"spf": Status.WRONG}
    spf = by_name(report, "spf")
    ip = setup[1].sending_ip
    assert f"{ip} is not authorized: softfail (matched '~all'" in spf.detail
    assert spf.expected == f'{dz.SPF_WITHOUT_IP}. IN TXT "v=spf1 ip4:{ip} ip4:192.0.2.0/24 ~all"'


async def test_spf_over_ten_lookups(setup):
    report = await check(setup, dz.SPF_TOO_MANY_LOOKUPS)
    assert problems(report) == {"spf": Status.WRONG}
    spf = by_name(report, "spf")
    assert "permerror" in spf.detail and "more than 10 DNS-querying terms" in spf.detail
    assert "'include:l11.dc.test'" in spf.detail


async def test_no_dmarc(setup):
    report = await check(setup, dz.NO_DMARC)
    assert problems(report) == {"dmarc": Status.MISSING}
    assert by_name(report, "dmarc").expected == (
        f'_dmarc.{dz.NO_DMARC}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{dz.NO_DMARC}"'
    )


async def test_null_mx(setup):
    report = await check(setup, dz.NULL_MX)
    assert problems(report) == {"mx": Status.WRONG}
    mx = by_name(report, "mx")
    assert mx.found == ["0 ."] and "null MX (RFC 7505)" in mx.detail


async def test_hostname_without_address(setup):
    report = await check(setup, dz.GOOD, hostname=dz.NO_ADDRESS_HOSTNAME)
    ip = setup[1].sending_ip
    assert problems(report) == {"hostname": Status.MISSING, f"ptr:{ip}": Status.WRONG}
    assert by_name(report, "hostname").expected == f"{dz.NO_ADDRESS_HOSTNAME}. IN A {ip}"
    assert f"names {dz.HOSTNAME}, not {dz.NO_ADDRESS_HOSTNAME}" in by_name(report, f"ptr:{ip}").detail


async def test_missing_ptr(setup):
    zones = setup[1]
    report = await check(setup, dz.GOOD, ips=(str(zones.sending_ip), str(zones.no_ptr_ip)))
    assert problems(report) == {f"ptr:{zones.no_ptr_ip}": Status.MISSING}
    ptr = by_name(report, f"ptr:{zones.no_ptr_ip}")
    _, a, b, c = str(zones.no_ptr_ip).split(".")
    assert ptr.expected == f"{c}.{b}.{a}.127.in-addr.arpa. IN PTR {dz.HOSTNAME}."
    assert by_name(report, f"ptr:{zones.sending_ip}").status is Status.OK


async def test_servfail_is_unknown_never_an_exception(setup):
    report = await check(setup, f"mail.{dz.SERVFAIL_ZONE}")
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["spf"] is statuses["dmarc"] is statuses["mx"] is Status.UNKNOWN
    assert statuses["dkim"] is Status.MISSING  # no keys for it: known without DNS
