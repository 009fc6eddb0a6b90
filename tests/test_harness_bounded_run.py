"""The harness' bounded commands: a command that outlives its timeout is killed with every process below it, even
one in a session of its own (as `su -c` starts the packaged rabbitmqctl's Erlang VM), so a timed-out test leaves
nothing running."""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.processes import descendants, run, run_bounded
from tests.harness.rabbitmq import BrokerNode


def running_with(token: str) -> list[int]:
    """The processes whose command line holds `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def kill_all_with(token: str) -> None:
    """SIGKILL every process whose command line holds `token` (a test's own leftovers)."""
    for pid in running_with(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def gone_within(token: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running_with(token):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def sleeper(token: str) -> str:
    """A shell command line of a Python process that sleeps 300 s, findable by `token`."""
    return f"{sys.executable} -c 'import time; time.sleep(300)' {token}"


def test_a_timeout_kills_the_command_its_children_and_a_grandchild_in_a_session_of_its_own() -> None:
    token = f"bounded-{secrets.token_hex(6)}"
    script = f'{sleeper(token)} & setsid sh -c "{sleeper(token)}; true" & wait'  # what su -c does: setsid
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_bounded(["sh", "-c", script], timeout=1.5)
    assert time.monotonic() - started < 10
    assert gone_within(token, 5), f"left running: {running_with(token)}"


def test_subprocess_run_alone_would_leave_the_grandchildren_running() -> None:
    """The failure this module guards against, shown: the check above would fail without `kill_tree`."""
    token = f"unbounded-{secrets.token_hex(6)}"
    script = f'setsid sh -c "{sleeper(token)}; true" & wait'
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["sh", "-c", script], capture_output=True, timeout=1.5, check=False)
        assert running_with(token)
    finally:
        kill_all_with(token)
    assert gone_within(token, 5)


def test_a_command_that_ends_in_time_gives_its_output_and_exit_code() -> None:
    result = run_bounded(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert run(["echo", "fine"], timeout=10) == "fine\n"
    with pytest.raises(RuntimeError, match="exited 3"):
        run(["sh", "-c", "exit 3"], timeout=10)


def test_descendants_lists_children_and_grandchildren_and_nothing_else() -> None:
    token = f"tree-{secrets.token_hex(6)}"
    with subprocess.Popen(["sh", "-c", f"{sleeper(token)} & {sleeper(token)} & wait"]) as shell:
        try:
            deadline = time.monotonic() + 10
            while len(set(running_with(token)) - {shell.pid}) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            sleepers = set(running_with(token)) - {shell.pid}  # the shell's own command line holds the token too
            assert len(sleepers) == 2
            assert sleepers <= set(descendants(shell.pid))
            assert shell.pid not in descendants(shell.pid)
        finally:
            kill_all_with(token)
            shell.kill()


@pytest.mark.broker
def test_a_timed_out_rabbitmqctl_leaves_no_erlang_vm_behind(broker_node: BrokerNode) -> None:
    expression = f"timer:sleep({20000 + secrets.randbelow(1000)})."  # unique: found by it in the command lines
    with pytest.raises(subprocess.TimeoutExpired):
        broker_node.ctl("eval", expression, timeout=6)
    assert gone_within(expression, 5), f"left running: {running_with(expression)}"
