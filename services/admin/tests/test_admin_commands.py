"""`kubemta-admin` (the console script, run as a subprocess): it lists `users`, `domains` and `dkim`, each reaches
its command line (kubemta_ingress.cli, kubemta_ingress.domains_cli, kubemta_queue_manager.dkim_cli), an unknown
or missing subcommand is a usage error (exit 2), and the service mains no longer take these subcommands."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ADMIN = BIN / "kubemta-admin"
RUN_TIMEOUT = 60
USAGE = "usage: kubemta-admin [-h] {users,api-keys,domains,dkim,queue,suppression} ..."


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ADMIN), *args], input=stdin, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False
    )


def clean_env(**variables: str) -> dict[str, str]:
    """This environment without any KUBEMTA_* variable, plus `variables`."""
    return {**{key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}, **variables}


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(USAGE + "\n")
    for line in ("    users ", "    domains ", "    dkim "):
        assert line in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        ([], "the following arguments are required"),
        (["--", "users"], "invalid choice: '--'"),
    ],
)
def test_an_unknown_or_missing_subcommand_exits_2_with_usage(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(USAGE + "\n") and message in result.stderr


@pytest.mark.parametrize(
    ("command", "actions"),
    [
        ("users", "{add,remove,list,verify}"),
        ("domains", "{check}"),
        ("dkim", "{generate}"),
        ("api-keys", "{create,list,show,rotate,remove}"),
        ("suppression", "{list,show,add,remove}"),
    ],
)
def test_each_subcommand_answers_its_own_help(command: str, actions: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: kubemta-admin {command} [-h] {actions} ...\n")


def test_users_adds_and_lists_in_the_users_file(tmp_path: Path) -> None:
    env = clean_env(KUBEMTA_USERS_FILE=str(tmp_path / "users"))
    added = run("users", "add", "app", "--identity", "example.com", "--password-stdin", env=env, stdin="pw\n")
    assert added.returncode == 0, added.stderr
    listed = run("users", "list", env=env)
    assert listed.returncode == 0 and listed.stdout == "app\texample.com\n"
    missing = run("users", "list", env=clean_env())
    assert missing.returncode == 2 and missing.stderr.startswith("kubemta-admin users: ")


def test_domains_check_refuses_an_invalid_domain_name_before_any_lookup() -> None:
    """A real action that needs no name server: an invalid name is a usage error (exit 2)."""
    result = run("domains", "check", "bad..name", env=clean_env(KUBEMTA_HOSTNAME="mx.example.com"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("kubemta-admin domains: invalid domain name: ")


def test_domains_check_reports_bad_configuration() -> None:
    result = run("domains", "check", "example.com", env=clean_env(KUBEMTA_LOG_FORMAT="bogus"))
    assert result.returncode == 2
    assert result.stderr.startswith("kubemta-admin domains: ") and "KUBEMTA_LOG_FORMAT" in result.stderr


def test_dkim_generate_writes_the_key_and_prints_the_record(tmp_path: Path) -> None:
    result = run("dkim", "generate", "--domain", "example.com", "--selector", "e1", "--algorithm", "ed25519",
                 "--keys-dir", str(tmp_path), env=clean_env())  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('e1._domainkey.example.com. IN TXT ( "v=DKIM1; k=ed25519; p=')
    assert sorted(os.listdir(tmp_path / "example.com")) == ["e1.key", "e1.pub"]
    again = run("dkim", "generate", "--domain", "example.com", "--selector", "e1", "--keys-dir", str(tmp_path))
    assert again.returncode == 1 and again.stderr.startswith("kubemta-admin dkim: ")


@pytest.mark.parametrize(
    ("service", "args"),
    [
        ("kubemta-ingress", ["users", "list"]),
        ("kubemta-ingress", ["domains", "check", "example.com"]),
        ("kubemta-queue-manager", ["dkim", "generate", "--domain", "example.com", "--selector", "s1"]),
    ],
)
def test_the_service_mains_no_longer_take_them(service: str, args: list[str], tmp_path: Path) -> None:
    """The service's own parser refuses them as any unknown argument (exit 2), before reading any file."""
    env = clean_env(KUBEMTA_USERS_FILE=str(tmp_path / "users"), KUBEMTA_DKIM_KEYS_DIR=str(tmp_path))
    result = subprocess.run(
        [str(BIN / service), *args], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: {service} [-h] [--version] [--check-config]\n")
    assert f"{service}: error: unrecognized arguments: {' '.join(args)}" in result.stderr
    assert os.listdir(tmp_path) == []


def test_a_subcommand_imports_only_its_own_module() -> None:
    """Each subcommand's module is imported when it runs, not all of them at every run (the ingress' HTTP API and
    the queue-manager's DKIM code cost `kubemta-admin queue` about half a second of CPU)."""
    from kubemta_admin.__main__ import COMMANDS, command_main

    for name in COMMANDS:
        assert callable(command_main(name))
    program = (
        "import contextlib, sys; from kubemta_admin.__main__ import run\n"
        "with contextlib.suppress(SystemExit): run(['queue', '--help'])\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'kubemta_ingress', 'kubemta_queue_manager', "
        "'fastapi'}))"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.stdout.strip().endswith("[]"), result.stdout + result.stderr
