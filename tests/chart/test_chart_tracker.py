"""The chart's tracker component: its Deployment (API port, SQLite index on an emptyDir, token files in the secrets
directory named as the settings read them, kubemta-admin's URL and admin token for `kubectl exec`), the other
components' URL and read token, the generated token Secret (random, kept on upgrades, accepted by the tracker's
parser), the NetworkPolicies, the stream retention in the ConfigMap, tracker.enabled false, schema and NOTES."""

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from kubemta_common.settings import ServiceSettings
from kubemta_tracker.settings import TrackerSettings, parse_tokens
from tests.chart import render as render_module
from tests.chart.render import CHART, install, render
from tests.chart.test_chart import deployments, env_of, of_kind

GENERATED = "kubemta-tracker-tokens"
TRACKER_URL = "http://kubemta-tracker.mail.svc:8025"
OTHERS = ("smtp-ingress", "queue-manager", "dns-resolver", "delivery-worker")

_cache: dict[str, list[dict[str, Any]]] = {}


def defaults() -> list[dict[str, Any]]:
    if "defaults" not in _cache:
        _cache["defaults"] = render({})
    return _cache["defaults"]


def pod_of(docs: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployments(docs)[name]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def secrets_volume(pod: dict[str, Any]) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [volume for volume in pod["volumes"] if volume["name"] == "kubemta-secrets"]
    (volume,) = volumes
    return volume


def token_items(pod: dict[str, Any], secret: str = GENERATED) -> dict[str, str]:
    sources = [s["secret"] for s in secrets_volume(pod)["projected"]["sources"] if s["secret"]["name"] == secret]
    (source,) = sources
    return {item["key"]: item["path"] for item in source["items"]}


def generated(docs: list[dict[str, Any]]) -> dict[str, str]:
    (secret,) = [doc for doc in of_kind(docs, "Secret") if doc["metadata"]["name"] == GENERATED]
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def policy(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [doc for doc in of_kind(docs, "NetworkPolicy") if doc["metadata"]["name"] == f"kubemta-{name}"]
    return found


def test_the_tracker_deployment_serves_the_api_from_an_index_on_an_empty_dir() -> None:
    pod, container = pod_of(defaults(), "tracker")
    assert container["command"] == ["kubemta-tracker"]
    env = env_of(container)
    assert env["KUBEMTA_TRACKER_LISTEN"]["value"] == "0.0.0.0:8025"
    assert env["KUBEMTA_INDEX_PATH"]["value"] == "/var/lib/kubemta-tracker/index.sqlite3"
    assert {"name": "http", "containerPort": 8025, "protocol": "TCP"} in container["ports"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["index"] == {"name": "index", "emptyDir": {"sizeLimit": "2Gi"}}
    assert {"name": "index", "mountPath": "/var/lib/kubemta-tracker"} in container["volumeMounts"]
    assert deployments(defaults())["tracker"]["spec"]["replicas"] == 2
    small = render({"tracker": {"persistence": {"sizeLimit": "512Mi"}, "replicaCount": 3, "syncTimeout": "5s"}})
    pod, container = pod_of(small, "tracker")
    assert {v["name"]: v for v in pod["volumes"]}["index"]["emptyDir"]["sizeLimit"] == "512Mi"
    assert env_of(container)["KUBEMTA_SYNC_TIMEOUT"]["value"] == "5s"
    assert "KUBEMTA_SYNC_TIMEOUT" not in env_of(pod_of(defaults(), "tracker")[1])  # unset: the service default


def test_the_settings_read_what_the_chart_sets_and_mounts() -> None:
    """Every env name and token file the chart gives the tracker and the components is a field of their settings."""
    _, container = pod_of(defaults(), "tracker")
    tracker_fields = set(TrackerSettings.model_fields)
    for name in ("KUBEMTA_TRACKER_LISTEN", "KUBEMTA_INDEX_PATH"):
        assert name in env_of(container) and name.removeprefix("KUBEMTA_").lower() in tracker_fields
    pod, _ = pod_of(defaults(), "tracker")
    files = token_items(pod)
    assert files == {"read-tokens": "tracker_read_tokens", "admin-tokens": "tracker_admin_tokens"}
    assert set(files.values()) <= tracker_fields
    for name in OTHERS:
        pod, container = pod_of(defaults(), name)
        assert token_items(pod) == {"service-token": "tracker_token"}
        assert "tracker_token" in ServiceSettings.model_fields and "tracker_url" in ServiceSettings.model_fields
        assert env_of(container)["KUBEMTA_TRACKER_URL"]["value"] == TRACKER_URL


def test_kubemta_admin_in_the_tracker_pod_finds_its_api_and_admin_token() -> None:
    """`kubectl exec deploy/kubemta-tracker -- kubemta-admin queue summary` needs no options."""
    _, container = pod_of(defaults(), "tracker")
    env = env_of(container)
    assert env["KUBEMTA_TRACKER_URL"]["value"] == "http://127.0.0.1:8025"
    assert env["KUBEMTA_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": GENERATED,
        "key": "admin-token",
        "optional": True,
    }
    for name in OTHERS:
        assert "KUBEMTA_ADMIN_TOKEN" not in env_of(pod_of(defaults(), name)[1])


def test_the_generated_tokens_are_random_consistent_and_accepted_by_the_tracker() -> None:
    data = generated(defaults())
    assert set(data) == {"read-tokens", "admin-tokens", "service-token", "admin-token"}
    assert len(data["service-token"]) == 48 and data["service-token"].isalnum()
    assert data["service-token"] != data["admin-token"]
    read = parse_tokens(data["read-tokens"])
    admin = parse_tokens(data["admin-tokens"])
    assert {name: token.get_secret_value() for name, token in read.items()} == {"services": data["service-token"]}
    assert {name: token.get_secret_value() for name, token in admin.items()} == {"admin": data["admin-token"]}
    assert generated(render({}, fresh=True))["service-token"] != data["service-token"]
    named = generated(render({"tracker": {"auth": {"adminName": "ops-team"}}}))
    assert named["admin-tokens"].startswith("ops-team:")


class _ClusterWithTokens(render_module._FakeApi):
    """The fake API server, but the tracker's token Secret already exists (an upgrade)."""

    service = "kept-service-token-0123456789"
    admin = "kept-admin-token-0123456789"

    def _is_the_secret(self) -> bool:
        return self.path.split("?", 1)[0] == f"/api/v1/namespaces/mail/secrets/{GENERATED}"

    def _secret(self) -> dict[str, Any]:
        data = {"service-token": self.service, "admin-token": self.admin}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": GENERATED,
                "namespace": "mail",
                "labels": {"app.kubernetes.io/managed-by": "Helm"},
                "annotations": {"meta.helm.sh/release-name": "kubemta", "meta.helm.sh/release-namespace": "mail"},
            },
            "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
        }

    def do_GET(self) -> None:
        if self._is_the_secret():
            return self._send(200, self._secret())
        return self._handle()

    def do_PATCH(self) -> None:
        if self._is_the_secret():
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            return self._send(200, self._secret())
        return self._handle()


@pytest.fixture
def cluster_with_tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(render_module, "_FakeApi", _ClusterWithTokens)
    yield


def test_the_generated_tokens_are_kept_when_the_secret_exists(cluster_with_tokens: None) -> None:
    data = generated(render({}))
    assert data["service-token"] == _ClusterWithTokens.service and data["admin-token"] == _ClusterWithTokens.admin
    assert data["read-tokens"] == f"services:{_ClusterWithTokens.service}"
    assert data["admin-tokens"] == f"admin:{_ClusterWithTokens.admin}"


def test_an_existing_secret_is_mounted_and_none_is_generated() -> None:
    docs = render({"tracker": {"auth": {"existingSecret": "ops-tracker"}}, "secrets": {"existingSecret": "shared"}})
    assert GENERATED not in [doc["metadata"]["name"] for doc in of_kind(docs, "Secret")]
    pod, container = pod_of(docs, "tracker")
    assert token_items(pod, "ops-tracker") == {
        "read-tokens": "tracker_read_tokens",
        "admin-tokens": "tracker_admin_tokens",
    }
    assert secrets_volume(pod)["projected"]["sources"][0] == {"secret": {"name": "shared"}}
    assert env_of(container)["KUBEMTA_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ops-tracker"
    for name in OTHERS:
        assert token_items(pod_of(docs, name)[0], "ops-tracker") == {"service-token": "tracker_token"}


def test_services_and_network_policies() -> None:
    docs = defaults()
    services = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Service")}
    api = services["kubemta-tracker"]["spec"]
    assert api["type"] == "ClusterIP"
    assert api["ports"] == [{"name": "http", "port": 8025, "targetPort": "http", "protocol": "TCP"}]
    assert api["selector"]["app.kubernetes.io/component"] == "tracker"
    assert services["kubemta-tracker-metrics"]["spec"]["clusterIP"] == "None"
    (rule,) = [r for r in policy(docs, "tracker")["spec"]["ingress"] if r["ports"][0]["port"] == "http"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "kubemta", "app.kubernetes.io/instance": "kubemta"}
            }
        },
        {"podSelector": {"matchLabels": {"kubemta-admin": "true"}}},
    ]
    for name in OTHERS:
        (egress,) = [r for r in policy(docs, name)["spec"]["egress"] if r["ports"][0]["port"] == 8025]
        assert egress["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "tracker"
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    opened = render({"tracker": {"networkPolicy": {"allowedFrom": [peer], "adminPodLabels": None}}})
    (rule,) = [r for r in policy(opened, "tracker")["spec"]["ingress"] if r["ports"][0]["port"] == "http"]
    assert rule["from"][1:] == [peer] and len(rule["from"]) == 2


def test_the_pdb_and_no_autoscaler_by_default() -> None:
    docs = defaults()
    (pdb,) = [doc for doc in of_kind(docs, "PodDisruptionBudget") if doc["metadata"]["name"] == "kubemta-tracker"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "kubemta-tracker" not in [doc["metadata"]["name"] for doc in of_kind(docs, "HorizontalPodAutoscaler")]
    hpa = render({"tracker": {"autoscaling": {"hpa": {"enabled": True}}}})
    assert "kubemta-tracker" in [doc["metadata"]["name"] for doc in of_kind(hpa, "HorizontalPodAutoscaler")]
    assert "replicas" not in deployments(hpa)["tracker"]["spec"]


def test_stream_retention_and_the_duplicate_window_go_to_the_shared_config_map() -> None:
    def config(docs: list[dict[str, Any]]) -> dict[str, str]:
        (found,) = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"] == "kubemta-config"]
        return dict(found["data"])

    data = config(defaults())
    assert data["KUBEMTA_EVENTS_MAX_AGE"] == "7d" and data["KUBEMTA_DECISIONS_MAX_AGE"] == "7d"
    assert not {"KUBEMTA_EVENTS_MAX_BYTES", "KUBEMTA_EVENTS_BUFFER", "KUBEMTA_DUPLICATE_WINDOW"} & set(data)
    data = config(
        render(
            {
                "events": {"maxAge": "3d", "maxBytes": 21474836480, "buffer": 5000, "confirmTimeout": "2s"},
                "decisions": {"maxAge": "10d"},
                "config": {"duplicateWindow": "0"},
            }
        )
    )
    assert data["KUBEMTA_EVENTS_MAX_AGE"] == "3d" and data["KUBEMTA_EVENTS_MAX_BYTES"] == "21474836480"
    assert data["KUBEMTA_EVENTS_BUFFER"] == "5000" and data["KUBEMTA_DECISIONS_MAX_AGE"] == "10d"
    assert data["KUBEMTA_DUPLICATE_WINDOW"] == "0"


def test_without_the_tracker_nothing_points_at_it() -> None:
    docs = render({"tracker": {"enabled": False}})
    assert "tracker" not in deployments(docs)
    assert not [doc for doc in docs if "tracker" in doc["metadata"]["name"]]
    for name in OTHERS:
        pod, container = pod_of(docs, name)
        assert "KUBEMTA_TRACKER_URL" not in env_of(container)
        assert "kubemta-secrets" not in [volume["name"] for volume in pod["volumes"]]
        assert 8025 not in [p["port"] for r in policy(docs, name)["spec"]["egress"] for p in r["ports"]]
    notes = install({"tracker": {"enabled": False}})["info"].get("notes", "")
    assert "kubemta-admin queue" not in notes


def test_the_notes_show_the_queue_commands() -> None:
    notes = install({})["info"].get("notes", "")
    assert "kubectl exec -n mail deploy/kubemta-tracker -- kubemta-admin queue summary" in notes
    assert "kubectl exec -n mail deploy/kubemta-tracker -- kubemta-admin queue show <id>" in notes
    assert "kubemta-tracker:8025" in notes and GENERATED in notes


def test_the_schema_checks_the_tracker_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    good: dict[str, Any] = {
        "tracker": {
            "enabled": False,
            "persistence": {"sizeLimit": "500Mi"},
            "auth": {"existingSecret": "t", "adminName": "ops"},
            "networkPolicy": {"allowedFrom": [{"podSelector": {}}], "adminPodLabels": {"role": "admin"}},
            "syncTimeout": "3s",
        },
        "events": {"maxAge": "14d", "maxBytes": None},
        "decisions": {"maxAge": "5d"},
    }
    jsonschema.validate(good, schema)
    bad: dict[str, Any]
    for bad in (
        {"tracker": {"replicas": 2}},
        {"tracker": {"auth": {"readTokens": "inline:secret"}}},
        {"tracker": {"auth": {"adminName": "Has Spaces"}}},
        {"tracker": {"persistence": {"sizeLimit": "lots"}}},
        {"tracker": {"autoscaling": {"keda": {"enabled": True}}}},
        {"events": {"maxAge": ""}},
        {"events": {"maxBytes": 1024}},
        {"events": {"retention": "7d"}},
        {"decisions": {"maxAge": "forever"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
