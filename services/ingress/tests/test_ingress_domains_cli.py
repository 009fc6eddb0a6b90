"""`kubemta-admin domains check` as a subprocess (the console script) against a real name server (NSD):
the table, --json, and the exit status: 0 all ok, 1 something missing or wrong, 2 usage errors."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemta_mail_auth.domain_check import DomainReport
from tests.harness import domain_zone as dz
from tests.harness.dns_server import DnsServer, free_port, random_loopback_address

SCRIPT = Path(sys.executable).parent / "kubemta-admin"
RUN_TIMEOUT = 60


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    address = random_loopback_address()
    zones = dz.build_zones(Path(tmp_path_factory.mktemp("dkim")) / "keys", address.rsplit(".", 1)[0])
    with DnsServer(Path(tmp_path_factory.mktemp("nsd")), address, free_port(address), zones.zones) as server:
        yield {
            **{key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")},
            "KUBEMTA_HOSTNAME": dz.HOSTNAME,
            "KUBEMTA_SENDING_IPS": str(zones.sending_ip),
            "KUBEMTA_DKIM_KEYS_DIR": str(zones.public_keys_dir),
            "KUBEMTA_DNS_NAMESERVERS": server.nameserver,
            "KUBEMTA_DNS_TIMEOUT": "3s",
        }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "domains", *args], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False
    )


def test_all_ok_exits_0_with_a_table(env):
    result = run(env, "check", dz.GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{dz.GOOD}: all 7 checks ok"
    assert lines[2].split() == ["STATUS", "CHECK", "DETAIL"]
    rows = {line.split()[1]: line.split()[0] for line in lines[3:]}
    assert set(rows.values()) == {"ok"} and {"dkim:r1", "dkim:s1", "spf", "dmarc", "mx", "hostname"} <= set(rows)
    assert "publish:" not in result.stdout


def test_problems_exit_1_with_found_and_the_record_to_publish(env):
    result = run(env, "check", dz.SPF_WITHOUT_IP)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith(f"{dz.SPF_WITHOUT_IP}: 1 of 6 checks need attention\n")
    (spf,) = [line for line in result.stdout.splitlines() if line.startswith("wrong ")]
    assert spf.split()[1] == "spf" and "is not authorized: softfail" in spf
    assert "found:   v=spf1 ip4:192.0.2.0/24 ~all" in result.stdout
    assert f'publish: {dz.SPF_WITHOUT_IP}. IN TXT "v=spf1 ip4:' in result.stdout


def test_json_output_is_the_report(env):
    result = run(env, "check", dz.NULL_MX, "--json")
    assert result.returncode == 1, result.stderr
    report = DomainReport.model_validate(json.loads(result.stdout))
    assert report.domain == dz.NULL_MX and not report.ok
    assert [(c.name, c.status.value) for c in report.checks if c.status.value != "ok"] == [("mx", "wrong")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "a..dc.test"), "invalid domain name: empty label"),
        (("check",), "the following arguments are required: domain"),
        (("verify", dz.GOOD), "invalid choice"),
        ((), "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2(env, args, message):
    result = run(env, *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_invalid_configuration_exits_2_naming_the_variable(env):
    result = run({**env, "KUBEMTA_SENDING_IPS": "192.0.2.300"}, "check", dz.GOOD)
    assert result.returncode == 2 and "KUBEMTA_SENDING_IPS" in result.stderr and "192.0.2.300" in result.stderr
