"""WorkerSettings: defaults and KUBEMTA_* parsing."""

import pytest

from kubemta_common.errors import ConfigError
from kubemta_delivery_worker.deliverer import smtp_options
from kubemta_delivery_worker.settings import WorkerSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch):
    for name in ("METRICS_LISTEN", "SMTP_CONNECT_TIMEOUT", "SMTP_COMMAND_TIMEOUT", "SMTP_DATA_TIMEOUT"):
        monkeypatch.delenv(f"KUBEMTA_{name}", raising=False)

    settings = WorkerSettings.load()

    assert str(settings.metrics_listen) == "127.0.0.1:9104"
    assert settings.smtp_connect_timeout == 30
    assert settings.smtp_command_timeout == 300
    assert settings.smtp_data_timeout == 600


def test_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEMTA_HOSTNAME", "mta.example.org")
    monkeypatch.setenv("KUBEMTA_SMTP_CONNECT_TIMEOUT", "10s")
    monkeypatch.setenv("KUBEMTA_SMTP_COMMAND_TIMEOUT", "2m")
    monkeypatch.setenv("KUBEMTA_SMTP_DATA_TIMEOUT", "15m")

    options = smtp_options(WorkerSettings.load())

    assert options.ehlo_name == "mta.example.org"
    assert (options.connect_timeout, options.command_timeout, options.data_timeout) == (10, 120, 900)


def test_invalid_duration_is_a_config_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEMTA_SMTP_DATA_TIMEOUT", "soon")

    with pytest.raises(ConfigError, match="KUBEMTA_SMTP_DATA_TIMEOUT"):
        WorkerSettings.load()
