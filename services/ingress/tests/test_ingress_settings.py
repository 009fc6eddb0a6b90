"""The ingress settings: defaults (Postfix' limits) and parsing of the KUBEMTA_* variables."""

import ipaddress

import pytest

from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import ConfigError
from kubemta_ingress.settings import IngressSettings

VARIABLES = (
    "KUBEMTA_SMTP_LISTEN",
    "KUBEMTA_METRICS_LISTEN",
    "KUBEMTA_LOCAL_DOMAINS",
    "KUBEMTA_RELAY_NETWORKS",
    "KUBEMTA_MAX_MESSAGE_SIZE",
    "KUBEMTA_MAX_RECIPIENTS",
    "KUBEMTA_SMTP_TIMEOUT",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    settings = IngressSettings.load()
    assert settings.smtp_listen == ListenAddress("127.0.0.1", 2525)
    assert settings.metrics_listen == ListenAddress("127.0.0.1", 9101)
    assert settings.local_domains == []
    assert settings.relay_networks == [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    assert settings.max_message_size == 10240000
    assert settings.max_recipients == 1000
    assert settings.smtp_timeout == 300.0


def test_environment(monkeypatch):
    monkeypatch.setenv("KUBEMTA_SMTP_LISTEN", "[::]:25")
    monkeypatch.setenv("KUBEMTA_LOCAL_DOMAINS", "Example.ORG., mail.example.net")
    monkeypatch.setenv("KUBEMTA_RELAY_NETWORKS", "10.0.0.0/8, fd00::/8")
    monkeypatch.setenv("KUBEMTA_MAX_MESSAGE_SIZE", "5000")
    monkeypatch.setenv("KUBEMTA_MAX_RECIPIENTS", "50")
    monkeypatch.setenv("KUBEMTA_SMTP_TIMEOUT", "5m")
    settings = IngressSettings.load()
    assert settings.smtp_listen == ListenAddress("::", 25)
    assert settings.local_domains == ["example.org", "mail.example.net"]
    assert settings.relay_networks == [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    assert (settings.max_message_size, settings.max_recipients, settings.smtp_timeout) == (5000, 50, 300.0)


def test_empty_listen_turns_smtp_off(monkeypatch):
    monkeypatch.setenv("KUBEMTA_SMTP_LISTEN", "")
    assert IngressSettings.load().smtp_listen is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KUBEMTA_MAX_RECIPIENTS", "0"),
        ("KUBEMTA_MAX_MESSAGE_SIZE", "-1"),
        ("KUBEMTA_SMTP_TIMEOUT", "soon"),
        ("KUBEMTA_RELAY_NETWORKS", "10.0.0.0/33"),
        ("KUBEMTA_SMTP_LISTEN", "localhost"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        IngressSettings.load()
