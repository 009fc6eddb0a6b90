"""Files in the mounted secrets directory are read under both names (`relayhost_password` and
`kubemta_relayhost_password`): the README documents the first, pydantic-settings reads the second."""

from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from kubemta_common.settings import ServiceSettings


def settings_reading(directory: Path) -> ServiceSettings:
    class FromDirectory(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="KUBEMTA_", secrets_dir=directory, extra="ignore")

    return FromDirectory()


@pytest.mark.parametrize("name", ["amqp_url", "kubemta_amqp_url", "AMQP_URL"])
def test_a_secret_file_is_read_with_or_without_the_prefix(tmp_path: Path, name: str, monkeypatch) -> None:
    monkeypatch.delenv("KUBEMTA_AMQP_URL", raising=False)
    (tmp_path / name).write_text("amqps://app:pw@rabbit.example:5671/mail")
    assert settings_reading(tmp_path).amqp_url == SecretStr("amqps://app:pw@rabbit.example:5671/mail")


def test_the_prefixed_file_wins_and_the_environment_wins_over_both(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBEMTA_AMQP_URL", raising=False)
    (tmp_path / "amqp_url").write_text("amqp://unprefixed/")
    (tmp_path / "kubemta_amqp_url").write_text("amqp://prefixed/")
    assert settings_reading(tmp_path).amqp_url.get_secret_value() == "amqp://prefixed/"
    monkeypatch.setenv("KUBEMTA_AMQP_URL", "amqp://environment/")
    assert settings_reading(tmp_path).amqp_url.get_secret_value() == "amqp://environment/"
