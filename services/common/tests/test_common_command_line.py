"""The shared command line: --help documents the environment, --check-config validates it."""

import asyncio

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
