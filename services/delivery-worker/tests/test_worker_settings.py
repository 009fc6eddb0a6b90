"""WorkerSettings: defaults and KUBEMTA_* parsing."""

import pytest

from kubemta_common.errors import ConfigError
from kubemta_delivery_worker.deliverer import build_deliverer, smtp_options
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


def test_attempt_limits_default_to_a_15_minute_deadline_and_postfix_host_caps(monkeypatch: pytest.MonkeyPatch):
    for name in ("DELIVERY_ATTEMPT_DEADLINE", "SMTP_MX_ADDRESS_LIMIT", "SMTP_MX_SESSION_LIMIT"):
        monkeypatch.delenv(f"KUBEMTA_{name}", raising=False)

    limits = build_deliverer(WorkerSettings.load()).limits

    assert (limits.deadline, limits.addresses, limits.sessions) == (900, 5, 2)


def test_attempt_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBEMTA_DELIVERY_ATTEMPT_DEADLINE", "5m")
    monkeypatch.setenv("KUBEMTA_SMTP_MX_ADDRESS_LIMIT", "0")
    monkeypatch.setenv("KUBEMTA_SMTP_MX_SESSION_LIMIT", "3")

    limits = build_deliverer(WorkerSettings.load()).limits

    assert (limits.deadline, limits.addresses, limits.sessions) == (300, 0, 3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DELIVERY_ATTEMPT_DEADLINE": "0"}, "greater than 0"),
        ({"DELIVERY_ATTEMPT_DEADLINE": "-5m"}, "invalid duration"),
        ({"DELIVERY_ATTEMPT_DEADLINE": "20s"}, r"longer than KUBEMTA_SMTP_CONNECT_TIMEOUT \(30s\)"),
        ({"DELIVERY_ATTEMPT_DEADLINE": "25m"}, r"plus KUBEMTA_DESTINATION_WAIT \(1m\) exceeds 25m"),
        ({"DELIVERY_ATTEMPT_DEADLINE": "20m", "DESTINATION_WAIT": "10m"}, "consumer_timeout"),
        ({"DELIVERY_ATTEMPT_DEADLINE": "1d"}, "consumer_timeout"),
        ({"SMTP_MX_ADDRESS_LIMIT": "-1"}, "greater than or equal to 0"),
        ({"SMTP_MX_SESSION_LIMIT": "two"}, "valid integer"),
    ],
)
def test_attempt_limits_are_validated(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str):
    for name, value in env.items():
        monkeypatch.setenv(f"KUBEMTA_{name}", value)
    variable = next(iter(env)) if len(env) == 1 else "DELIVERY_ATTEMPT_DEADLINE"

    with pytest.raises(ConfigError, match=f"KUBEMTA_{variable}: .*{message}"):
        WorkerSettings.load()
