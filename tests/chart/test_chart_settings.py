"""The chart's first-class service settings: written to the ConfigMap only when set, secrets only mounted."""

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chart.render import CHART, SCENARIOS, render
from tests.chart.test_chart import deployments, env_of, manifests, of_kind

(RELAYHOST,) = [path for path in SCENARIOS if path.name == "relayhost-values.yaml"]
# Settings the chart leaves to the services' own defaults unless a value is set.
OPTIONAL = (
    "KUBEMTA_MAX_CONNECTIONS",
    "KUBEMTA_MAX_CONNECTIONS_PER_IP",
    "KUBEMTA_MAX_ERRORS",
    "KUBEMTA_SMTP_TIMEOUT",
    "KUBEMTA_DATA_RECEIVE_TIMEOUT",
    "KUBEMTA_MAX_SESSION_DURATION",
    "KUBEMTA_AUTH_FAILURE_LIMIT",
    "KUBEMTA_AUTH_FAILURE_WINDOW",
    "KUBEMTA_AUTH_FAILURE_DELAY",
    "KUBEMTA_TLS_RELOAD_INTERVAL",
    "KUBEMTA_PROXY_PROTOCOL_TIMEOUT",
    "KUBEMTA_SENDING_IPS",
    "KUBEMTA_DNS_TIMEOUT",
    "KUBEMTA_DNS_CACHE_SIZE",
    "KUBEMTA_TLS_POLICY",
    "KUBEMTA_MTA_STS_TIMEOUT",
    "KUBEMTA_MTA_STS_CACHE_SIZE",
    "KUBEMTA_DESTINATION_CONCURRENCY",
    "KUBEMTA_DESTINATION_BACKOFF",
    "KUBEMTA_DESTINATION_WAIT",
    "KUBEMTA_CONNECTION_IDLE_SECONDS",
    "KUBEMTA_CONNECTION_CACHE_PER_HOST",
    "KUBEMTA_CONNECTION_CACHE_SIZE",
    "KUBEMTA_DELIVERY_LIMIT",
    "KUBEMTA_SMTP_CONNECT_TIMEOUT",
    "KUBEMTA_SMTP_COMMAND_TIMEOUT",
    "KUBEMTA_SMTP_DATA_TIMEOUT",
)


def config_data(docs: list[dict[str, Any]]) -> dict[str, str]:
    (configmap,) = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"].endswith("-config")]
    return dict(configmap["data"])


def egress_ports(docs: list[dict[str, Any]], component_name: str) -> set[Any]:
    (policy,) = [
        doc
        for doc in of_kind(docs, "NetworkPolicy")
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == component_name
    ]
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def test_unset_settings_are_left_to_the_services() -> None:
    data = config_data(manifests(None))
    assert not set(OPTIONAL) & set(data)
    assert data["KUBEMTA_MTA_STS"] == "true"
    assert data["KUBEMTA_CONSUMER_BATCH_WINDOW"] == "20ms"  # the chart's default, as the services' own


def test_set_settings_land_in_the_configmap() -> None:
    data = config_data(manifests(RELAYHOST))
    assert data["KUBEMTA_RELAYHOST"] == "[smtp.example.net]:587"
    assert data["KUBEMTA_TLS_POLICY"] == "example.com=verify;*=may"
    assert data["KUBEMTA_MTA_STS"] == "false"
    assert data["KUBEMTA_MAX_CONNECTIONS"] == "500"
    assert data["KUBEMTA_MAX_CONNECTIONS_PER_IP"] == "20"
    assert data["KUBEMTA_SMTP_TIMEOUT"] == "2m"
    assert data["KUBEMTA_AUTH_FAILURE_LIMIT"] == "3"
    assert data["KUBEMTA_DESTINATION_CONCURRENCY"] == "10"
    assert data["KUBEMTA_DESTINATION_BACKOFF"] == "2m"
    assert data["KUBEMTA_CONNECTION_IDLE_SECONDS"] == "0"  # a set zero is a value, not "unset"
    assert data["KUBEMTA_SMTP_CONNECT_TIMEOUT"] == "20s"
    assert "KUBEMTA_SMTP_DATA_TIMEOUT" not in data


def test_numbers_are_written_as_the_services_parse_them() -> None:
    data = config_data(
        render(
            {
                "config": {"dnsCacheSize": 1000000, "destinationBackoff": 2.5, "mtaStsCacheSize": 0},
                "smtpIngress": {"proxyProtocol": {"timeout": 3}},
            }
        )
    )
    assert data["KUBEMTA_DNS_CACHE_SIZE"] == "1000000"
    assert data["KUBEMTA_DESTINATION_BACKOFF"] == "2.5"
    assert data["KUBEMTA_MTA_STS_CACHE_SIZE"] == "0"
    assert data["KUBEMTA_PROXY_PROTOCOL_TIMEOUT"] == "3"


def test_relayhost_credentials_are_mounted_only_into_the_worker_and_never_configured() -> None:
    docs = manifests(RELAYHOST)
    data = config_data(docs)
    assert not [key for key in data if "RELAYHOST_USERNAME" in key or "RELAYHOST_PASSWORD" in key]
    assert not [doc for doc in of_kind(docs, "Secret") if "relayhost" in json.dumps(doc).lower()]
    for name, deployment in deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert not {"KUBEMTA_RELAYHOST_USERNAME", "KUBEMTA_RELAYHOST_PASSWORD"} & set(env_of(container))
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
        assert mounts["kubemta-secrets"]["mountPath"] == "/run/secrets/kubemta"
        sources = volumes["kubemta-secrets"]["projected"]["sources"]
        assert sources[0] == {"secret": {"name": "kubemta-secrets"}}
        assert sources[-1]["secret"]["name"] == "kubemta-tracker-tokens"  # the tracker's tokens (on by default)
        if name != "delivery-worker":
            assert len(sources) == 2
            continue
        assert sources[1]["secret"]["name"] == "kubemta-relayhost"
        assert sources[1]["secret"]["items"] == [
            {"key": "username", "path": "relayhost_username"},
            {"key": "password", "path": "relayhost_password"},
        ]


def test_relayhost_credentials_alone_get_their_own_secrets_directory() -> None:
    relay = {"config": {"relayhost": "smtp.example.net"}, "relayhost": {"existingSecret": "relay"}}
    docs = render({**relay, "tracker": {"enabled": False}})
    pod = deployments(docs)["delivery-worker"]["spec"]["template"]["spec"]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "kubemta-secrets"]
    assert [source["secret"]["name"] for source in volume["projected"]["sources"]] == ["relay"]
    assert "kubemta-secrets" not in json.dumps(deployments(docs)["queue-manager"])
    with_tracker = deployments(render(relay))
    (volume,) = [
        v
        for v in with_tracker["delivery-worker"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "kubemta-secrets"
    ]
    assert [source["secret"]["name"] for source in volume["projected"]["sources"]] == [
        "relay",
        "kubemta-tracker-tokens",
    ]
    assert 25 in egress_ports(docs, "delivery-worker")  # no port in the relayhost: 25


def test_relayhost_credentials_need_a_relayhost() -> None:
    with pytest.raises(Exception, match="set config.relayhost too"):
        render({"relayhost": {"existingSecret": "relay"}})


def test_tls_ca_bundle_is_mounted_for_the_worker() -> None:
    docs = manifests(RELAYHOST)
    for name, deployment in deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        if name != "delivery-worker":
            assert "tls-ca" not in volumes and "KUBEMTA_TLS_CA_FILE" not in env_of(container)
            continue
        assert env_of(container)["KUBEMTA_TLS_CA_FILE"]["value"] == "/etc/kubemta/tls-ca/ca.pem"
        assert volumes["tls-ca"]["secret"] == {
            "secretName": "kubemta-ca",
            "items": [{"key": "ca.pem", "path": "ca.pem"}],
        }
        assert {"name": "tls-ca", "mountPath": "/etc/kubemta/tls-ca", "readOnly": True} in container["volumeMounts"]
    worker = deployments(render({"tlsCa": {"existingConfigMap": "trust-bundle"}}))["delivery-worker"]
    (volume,) = [v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls-ca"]
    assert volume["configMap"]["name"] == "trust-bundle"
    with pytest.raises(Exception, match="not both"):
        render({"tlsCa": {"existingSecret": "a", "existingConfigMap": "b"}})


def test_network_policies_follow_the_relayhost_and_mta_sts() -> None:
    defaults = manifests(None)
    assert 443 in egress_ports(defaults, "dns-resolver")  # MTA-STS policy fetches, on by default
    assert 587 not in egress_ports(defaults, "delivery-worker")
    docs = manifests(RELAYHOST)
    assert 443 not in egress_ports(docs, "dns-resolver")
    assert {25, 587} <= egress_ports(docs, "delivery-worker")


def test_schema_checks_the_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    good: dict[str, Any] = {"config": {"smtpTimeout": "90s", "destinationBackoff": 2.5, "dnsCacheSize": 0}}
    jsonschema.validate(good, schema)
    for window in ("0", "20ms", "0.5s", "5ms", "1s", "1000ms", "999.9ms", "0ms", "0s"):
        jsonschema.validate({"config": {"consumerBatchWindow": window}}, schema)
    bad: dict[str, Any]
    for bad in (
        {"config": {"smtpTimeout": "5 minutes"}},
        {"config": {"maxConnections": 0}},
        {"config": {"mtaSts": "yes"}},
        {"config": {"consumerBatchWindow": "20 ms"}},
        {"config": {"consumerBatchWindow": "-1ms"}},
        {"config": {"consumerBatchWindow": "1m"}},
        {"config": {"consumerBatchWindow": 20}},
        {"config": {"consumerBatchWindow": "1.5s"}},
        {"config": {"consumerBatchWindow": "1001ms"}},
        {"config": {"consumerBatchWindow": "1000.5ms"}},
        {"config": {"consumerBatchWindow": "2s"}},
        {"relayhost": {"password": "secret"}},
        {"smtpIngress": {"proxyProtocol": {"timeout": "soon"}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_worker_reads_the_relayhost_credentials_the_chart_mounts(tmp_path, monkeypatch) -> None:
    """The files named as the chart mounts them are what the worker's settings read (they were not: pydantic-settings
    only looked for kubemta_relayhost_password, so the chart's credentials never reached the worker)."""
    from pydantic_settings import SettingsConfigDict

    from kubemta_delivery_worker.settings import WorkerSettings

    docs = render({"config": {"relayhost": "smtp.example.net"}, "relayhost": {"existingSecret": "relay"}})
    pod = deployments(docs)["delivery-worker"]["spec"]["template"]["spec"]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == "kubemta-secrets"]
    paths = {item["key"]: item["path"] for item in volume["projected"]["sources"][0]["secret"]["items"]}
    (tmp_path / paths["username"]).write_text("mailer")
    (tmp_path / paths["password"]).write_text("pa55word")
    for variable in ("KUBEMTA_RELAYHOST_USERNAME", "KUBEMTA_RELAYHOST_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)

    class MountedWorkerSettings(WorkerSettings):
        model_config = SettingsConfigDict(env_prefix="KUBEMTA_", secrets_dir=tmp_path, extra="ignore")

    settings = MountedWorkerSettings()
    assert settings.relayhost_username == "mailer"
    assert settings.relayhost_password.get_secret_value() == "pa55word"


BATCH_WINDOW_PATTERN: str = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"][
    "properties"
]["consumerBatchWindow"]["pattern"]
"""The schema's pattern for `config.consumerBatchWindow`, read once (not at every hypothesis example)."""


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_batch_window_the_schema_admits_is_one_the_services_take(data: st.DataObject) -> None:
    """The chart refuses at install what a service would refuse at start (it admitted `1.5s`, over the services'
    1 s limit, so a pod would crash-loop on a value `helm install` had taken)."""
    from kubemta_common.settings import ServiceSettings

    window = data.draw(st.from_regex(BATCH_WINDOW_PATTERN, fullmatch=True))
    seconds = ServiceSettings.model_validate({"consumer_batch_window": window}).consumer_batch_window
    assert 0 <= seconds <= 1.0


def duration_fields(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path in the values of every field the schema checks as a duration (a pattern with an `h` unit)."""
    found: list[tuple[str, ...]] = []
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and "smhd" in pattern:
            found.append(path)
        for key, child in node.items():
            found.extend(duration_fields(child, path if key == "properties" else (*path, key)))
    return found


def test_every_duration_the_services_read_takes_milliseconds_in_the_chart_too() -> None:
    """The services read `250ms` in every duration (the README's table shows defaults such as `500ms`); the chart's
    schema refused that spelling in all of them but the batch window, so a value copied from the README failed
    `helm install`."""
    from kubemta_common.config_types import parse_duration

    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)  # one validator: 341 validations
    fields = [path for path in duration_fields(schema) if path != ("config", "retrySchedule")]
    assert len(fields) >= 30
    for path in fields:
        values: dict[str, Any] = {}
        leaf = values
        for key in path[:-1]:
            leaf = leaf.setdefault(key, {})
        for text in ("250ms", "1.5s", "5m", "2h", "1d", "1w", "90"):
            leaf[path[-1]] = text
            validator.validate(values)
            assert parse_duration(text) > 0
        for text in ("250 millis", "5mm", "-1s", "ms"):
            leaf[path[-1]] = text
            with pytest.raises(jsonschema.ValidationError):
                validator.validate(values)
