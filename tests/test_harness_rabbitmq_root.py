"""The harness' other RabbitMQ installations (KUBEMTA_TEST_RABBITMQ_ROOT, `make test-rabbitmq`): how a private
node's programs are run from another Debian system's directory, and the paths they see.

The wrapper itself (unshare, the mounts, chroot) runs for real in `make test-rabbitmq`, which starts every
private node of the suite through it; here the command lines and paths it is given."""

import subprocess
from pathlib import Path

import pytest

from tests.harness.rabbitmq import (
    NODE_DIR,
    RABBITMQ_ROOT_ENV,
    ROOT_WRAPPER,
    BrokerNode,
    Installation,
    find_or_start_broker,
)


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "trixie"
    server = root / "usr/lib/rabbitmq/bin/rabbitmq-server"
    server.parent.mkdir(parents=True)
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    return root


def test_this_systems_installation_runs_the_programs_as_they_are(tmp_path: Path) -> None:
    installation = Installation()
    assert installation.command("rabbitmqctl", tmp_path) == ["/usr/lib/rabbitmq/bin/rabbitmqctl"]
    assert installation.seen_path(tmp_path / "mnesia", tmp_path) == str(tmp_path / "mnesia")


def test_without_the_variable_the_harness_uses_this_system(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RABBITMQ_ROOT_ENV, raising=False)
    assert Installation.chosen() == Installation()
    monkeypatch.setenv(RABBITMQ_ROOT_ENV, "")
    assert Installation.chosen() == Installation()


def test_another_root_runs_the_program_by_chroot_with_the_node_directory_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_root(tmp_path)
    monkeypatch.setenv(RABBITMQ_ROOT_ENV, str(root))
    installation = Installation.chosen()
    assert installation.root == root.resolve()
    workdir = tmp_path / "node"
    command = installation.command("rabbitmq-server", workdir)
    assert command[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert command[5:7] == ["sh", "-c"]
    assert command[7] == ROOT_WRAPPER
    assert command[8:] == [str(root.resolve()), str(workdir), "/usr/lib/rabbitmq/bin/rabbitmq-server"]
    assert (root / NODE_DIR.lstrip("/")).is_dir()  # the mount point exists in the root
    assert installation.seen_path(workdir / "log", workdir) == f"{NODE_DIR}/log"
    assert installation.seen_path(workdir, workdir) == NODE_DIR


def test_the_wrapper_script_mounts_then_enters_the_root_with_the_programs_arguments() -> None:
    """`sh -c WRAPPER ROOT WORKDIR PROGRAM ARGS...`: the script's $0 is the root, $1 the node's directory, and
    chroot gets the program with its arguments unchanged (a stand-in `mount` and `chroot` print what they got)."""
    stubs = (
        'mount() { printf "mount %s\\n" "$*"; }; chroot() { printf "chroot %s\\n" "$*"; exit 0; }; '
        + ROOT_WRAPPER.replace("exec chroot", "chroot")
    )
    result = subprocess.run(
        ["sh", "-c", stubs, "/r o/t", "/w d", "/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", "a b@localhost", "status"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "mount -t proc proc /r o/t/proc",
        f"mount --bind /w d /r o/t{NODE_DIR}",
        "chroot /r o/t /usr/lib/rabbitmq/bin/rabbitmqctl -n a b@localhost status",
    ]


def test_a_root_without_rabbitmq_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RABBITMQ_ROOT_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="holds no /usr/lib/rabbitmq/bin/rabbitmq-server"):
        Installation.chosen()


def test_another_root_never_uses_the_system_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker at 127.0.0.1:5672 is this system's version: with another root the harness starts its own node
    (here the start itself is stood in for)."""
    monkeypatch.setenv(RABBITMQ_ROOT_ENV, str(_fake_root(tmp_path)))
    monkeypatch.delenv("KUBEMTA_TEST_PRIVATE_BROKER", raising=False)
    started: list[Path] = []

    def start(workdir: Path, config: str = "") -> BrokerNode:
        started.append(workdir)
        return BrokerNode("127.0.0.1", 1, node_name="n@localhost", workdir=workdir)

    monkeypatch.setattr("tests.harness.rabbitmq.start_private_node", start)
    monkeypatch.setattr("tests.harness.rabbitmq.port_answers", lambda host, port: True)
    node = find_or_start_broker(tmp_path / "node")
    assert started == [tmp_path / "node"]
    assert node.port == 1
