"""The shared command line: --help documents the environment, --check-config validates it."""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from kubemta_common.command_line import service_main
from kubemta_common.settings import ServiceSettings


async def _never(stop: asyncio.Event) -> None:
    raise AssertionError("the service must not start for --help or --check-config")


def test_help_lists_every_variable_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        service_main("demo", "kubemta demo service.", ServiceSettings, _never, ["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "kubemta demo service." in out
    assert "KUBEMTA_RETRY_SCHEDULE (default: 5m,10m,20m,40m,1h)" in out
    assert "KUBEMTA_AMQP_URL (default: amqp://guest:guest@127.0.0.1:5672/)" in out


def test_check_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    service_main("demo", "d", ServiceSettings, _never, ["--check-config"])
    assert "configuration is valid" in capsys.readouterr().out
    monkeypatch.setenv("KUBEMTA_PUBLISH_TIMEOUT", "never")
    with pytest.raises(SystemExit) as exited:
        service_main("demo", "d", ServiceSettings, _never, ["--check-config"])
    assert exited.value.code == 2
    assert "KUBEMTA_PUBLISH_TIMEOUT" in capsys.readouterr().err


EXITING_SLOWLY = """
import asyncio, atexit, signal, sys, time
from kubemta_common.command_line import service_main
from kubemta_common.settings import ServiceSettings

def slow_exit() -> None:
    ignored = signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    print(f"exiting, SIGTERM ignored: {ignored}", flush=True)
    time.sleep(3)  # the interpreter's teardown, long enough for a second SIGTERM to land in it

async def serve(stop: asyncio.Event) -> None:
    print("serving", flush=True)
    await stop.wait()

atexit.register(slow_exit)
service_main("demo", "d", ServiceSettings, serve, [])
"""


def test_a_second_sigterm_while_the_process_exits_leaves_a_clean_exit() -> None:
    """A supervisor (or a test harness) that sends SIGTERM to a service already stopping must still see exit 0: after
    the loop closed, the stop signals are ignored. The closed loop's own handler would stay installed until the
    interpreter's signal teardown, which puts SIG_DFL back for a Python handler (not for SIG_IGN), so a SIGTERM in
    the exit's last moments killed the process (-15; seen in the suite's ingress shutdown test)."""
    env = {**os.environ, "KUBEMTA_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/none"}
    with subprocess.Popen(
        [sys.executable, "-c", EXITING_SLOWLY], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "serving"
            process.send_signal(signal.SIGTERM)
            assert process.stdout.readline().strip() == "exiting, SIGTERM ignored: True"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
