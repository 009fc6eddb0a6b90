"""Configuration value formats and settings validation."""

import ipaddress

import pytest

from kubemta_common.config_types import format_duration, parse_duration, parse_listen, split_host_port
from kubemta_common.errors import ConfigError
from kubemta_common.settings import ServiceSettings


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("4h", 14400),
        ("5d", 432000),
        ("90", 90),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("250ms", 0.25),
    ],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-1s", "five minutes", "5mss", "ms", "20 m s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (3600, "1h"), (86400, "1d"), (45, "45s"), (90, "90s"), (0.02, "20ms"), (1.5, "1.5s"), (0, "0s")],
)
def test_durations_format_shortest(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_listen_values() -> None:
    assert str(parse_listen("127.0.0.1:2525")) == "127.0.0.1:2525"
    assert str(parse_listen("[::1]:25")) == "[::1]:25"
    assert parse_listen("") is None
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1")
    assert split_host_port("[mx.example.org]", 25) == ("mx.example.org", 25)
    assert split_host_port("relay:587") == ("relay", 587)
    with pytest.raises(ValueError):
        split_host_port("relay:99999")


def test_settings_read_lists_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_RETRY_SCHEDULE", "1s, 2s,1m")
    monkeypatch.setenv("KUBEMTA_METRICS_LISTEN", "")
    monkeypatch.setenv("KUBEMTA_PUBLISH_TIMEOUT", "3s")
    settings = ServiceSettings.load()
    assert settings.retry_schedule == [1.0, 2.0, 60.0]
    assert settings.metrics_listen is None
    assert settings.publish_timeout == 3.0


def test_settings_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_RETRY_SCHEDULE", "soon")
    monkeypatch.setenv("KUBEMTA_AMQP_PREFETCH", "0")
    with pytest.raises(ConfigError) as caught:
        ServiceSettings.load()
    assert "KUBEMTA_RETRY_SCHEDULE" in str(caught.value)
    assert "KUBEMTA_AMQP_PREFETCH" in str(caught.value)


def test_network_lists() -> None:
    from kubemta_common.config_types import _to_networks

    assert _to_networks("127.0.0.0/8, ::1/128") == [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
