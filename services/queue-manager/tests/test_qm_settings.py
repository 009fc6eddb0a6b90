"""Queue-manager settings: Postfix-like defaults, environment parsing, clear errors."""

import pytest

from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import ConfigError
from kubemta_queue_manager.__main__ import main
from kubemta_queue_manager.settings import QueueManagerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("METRICS_LISTEN", "MAX_QUEUE_LIFETIME", "DELAY_WARNING_AFTER", "RETRY_SCHEDULE", "HOSTNAME"):
        monkeypatch.delenv(f"KUBEMTA_{name}", raising=False)


def test_defaults() -> None:
    settings = QueueManagerSettings()
    assert settings.metrics_listen == ListenAddress("127.0.0.1", 9102)
    assert settings.max_queue_lifetime == 5 * 86400
    assert settings.delay_warning_after == 4 * 3600
    assert settings.retry_schedule == [300, 600, 1200, 2400, 3600]


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_MAX_QUEUE_LIFETIME", "2d")
    monkeypatch.setenv("KUBEMTA_DELAY_WARNING_AFTER", "0")
    monkeypatch.setenv("KUBEMTA_RETRY_SCHEDULE", "1s,2s")
    monkeypatch.setenv("KUBEMTA_HOSTNAME", "mx.example.net")
    settings = QueueManagerSettings.load()
    assert settings.max_queue_lifetime == 2 * 86400
    assert settings.delay_warning_after == 0
    assert settings.retry_schedule == [1, 2]
    assert settings.hostname == "mx.example.net"


def test_invalid_lifetime_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_MAX_QUEUE_LIFETIME", "forever")
    with pytest.raises(ConfigError, match="KUBEMTA_MAX_QUEUE_LIFETIME"):
        QueueManagerSettings.load()


def test_main_exits_with_a_clear_message_on_bad_config(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("KUBEMTA_DELAY_WARNING_AFTER", "-1h")
    monkeypatch.setattr("sys.argv", ["kubemta-queue-manager"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert "KUBEMTA_DELAY_WARNING_AFTER" in capsys.readouterr().err
