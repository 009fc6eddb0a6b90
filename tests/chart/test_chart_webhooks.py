"""The chart's webhooks component (kubemta-webhooks): off by default; on, a Deployment that reads its endpoints file
from a mounted Secret (generated from webhooks.endpoints, or webhooks.existingSecret), no tracker wiring and no
Kubernetes token, a metrics Service, ServiceMonitor and PDB, and a NetworkPolicy that admits only scrapes in and DNS,
the broker and the endpoints' ports out. The scenario ci/app-identities-values.yaml (webhooks on) is linted and
validated against the Kubernetes schemas by test_chart.py; the existingSecret variant is validated here."""

import base64
import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.chart.render import CHART, SCENARIOS, install, render, scenario_values
from tests.chart.test_chart import CUSTOM_KINDS, KUBERNETES_VERSION, component, deployments, env_of

(SCENARIO,) = [path for path in SCENARIOS if path.name == "app-identities-values.yaml"]
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
ENDPOINT = {
    "name": "shop",
    "url": "https://hooks.shop.example.com/kubemta",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "submitters": ["system:serviceaccount:shop:checkout"],
    "events": ["delivered", "bounced"],
}

_cache: dict[str, list[dict[str, Any]]] = {}


def scenario() -> list[dict[str, Any]]:
    if "scenario" not in _cache:
        _cache["scenario"] = render(scenario_values(SCENARIO))
    return _cache["scenario"]


def webhooks_docs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """kind -> the webhooks component's object of that kind (one each)."""
    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "webhooks":
            assert doc["kind"] not in found, doc["kind"]
            found[doc["kind"]] = doc
    return found


def pod_of(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployments(docs)["webhooks"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def endpoints_file(docs: list[dict[str, Any]]) -> Any:
    secret = webhooks_docs(docs)["Secret"]
    assert secret["metadata"]["name"] == "kubemta-webhooks" and secret["type"] == "Opaque"
    (value,) = secret["data"].values()
    return json.loads(base64.b64decode(value))


def test_off_by_default() -> None:
    docs = render({})
    assert webhooks_docs(docs) == {}
    assert "webhooks" not in deployments(docs)
    assert "Webhooks:" not in install({})["info"]["notes"]


def test_on_it_runs_kubemta_webhooks_with_its_endpoints_file() -> None:
    pod, container = pod_of(scenario())
    assert container["command"] == ["kubemta-webhooks"]
    env = env_of(container)
    assert env["KUBEMTA_WEBHOOKS_FILE"] == {
        "name": "KUBEMTA_WEBHOOKS_FILE",
        "value": "/etc/kubemta/webhooks/webhooks.json",
    }
    assert "KUBEMTA_AMQP_URL" in env
    # the whole Secret as a directory (no subPath): the service sees the kubelet's updates
    assert {"name": "webhooks", "mountPath": "/etc/kubemta/webhooks", "readOnly": True} in container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["webhooks"] == {
        "name": "webhooks",
        "secret": {"secretName": "kubemta-webhooks", "items": [{"key": "webhooks.json", "path": "webhooks.json"}]},
    }
    assert not [m for m in container["volumeMounts"] if "subPath" in m]
    # webhooks never ask the tracker and never talk to the Kubernetes API
    assert "KUBEMTA_TRACKER_URL" not in env and "KUBEMTA_ADMIN_TOKEN" not in env
    assert "kubemta-secrets" not in {v["name"] for v in pod["volumes"]}
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    # metrics, /healthz and /readyz on the shared metrics port (KUBEMTA_METRICS_LISTEN from the ConfigMap)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert deployments(scenario())["webhooks"]["spec"]["replicas"] == 2
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_endpoints_from_values_become_the_json_list_the_service_reads() -> None:
    assert endpoints_file(scenario()) == scenario_values(SCENARIO)["webhooks"]["endpoints"]
    docs = render({"webhooks": {"enabled": True, "endpoints": [ENDPOINT], "existingSecretKey": "hooks"}})
    assert endpoints_file(docs) == [ENDPOINT]
    _, container = pod_of(docs)
    assert env_of(container)["KUBEMTA_WEBHOOKS_FILE"]["value"] == "/etc/kubemta/webhooks/hooks"
    assert endpoints_file(render({"webhooks": {"enabled": True}})) == []  # runs, sends nothing
    assert "No endpoints yet" in install({"webhooks": {"enabled": True}})["info"]["notes"]


def test_an_existing_secret_is_mounted_instead_and_validates() -> None:
    docs = render({"webhooks": {"enabled": True, "existingSecret": "mail-webhooks"}})
    assert "Secret" not in webhooks_docs(docs)
    pod, _ = pod_of(docs)
    assert {v["name"]: v for v in pod["volumes"]}["webhooks"]["secret"]["secretName"] == "mail-webhooks"
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    with pytest.raises(Exception, match="set endpoints or existingSecret, not both"):
        render({"webhooks": {"enabled": True, "existingSecret": "mail-webhooks", "endpoints": [ENDPOINT]}})


def test_service_monitor_and_pdb() -> None:
    found = webhooks_docs(scenario())
    service = found["Service"]
    assert service["metadata"]["name"] == "kubemta-webhooks-metrics"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "webhooks"
    monitor = found["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert found["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert "HorizontalPodAutoscaler" not in found and "ScaledObject" not in found
    hpa = render({"webhooks": {"enabled": True, "autoscaling": {"hpa": {"enabled": True}}}})
    assert "HorizontalPodAutoscaler" in webhooks_docs(hpa) and "replicas" not in deployments(hpa)["webhooks"]["spec"]


def test_the_network_policy_admits_scrapes_in_and_dns_broker_and_endpoints_out() -> None:
    policy = webhooks_docs(render({"webhooks": {"enabled": True}}))["NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in spec["ingress"]] == [[{"port": "metrics", "protocol": "TCP"}]]
    egress = {tuple(sorted(p["port"] for p in rule["ports"])): rule for rule in spec["egress"]}
    assert set(egress) == {(53, 53), (5671, 5672), (80, 443)}  # no tracker (8025), no Kubernetes API
    assert "to" not in egress[(80, 443)]  # any endpoint address by default
    peer = [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    narrowed = render({"webhooks": {"enabled": True, "networkPolicy": {"endpointPorts": [8443], "endpointsTo": peer}}})
    rules = webhooks_docs(narrowed)["NetworkPolicy"]["spec"]["egress"]
    assert {"ports": [{"port": 8443, "protocol": "TCP"}], "to": peer} in rules
    assert 443 not in {p["port"] for rule in rules for p in rule["ports"]}
    off = render({"webhooks": {"enabled": True, "networkPolicy": {"enabled": False}}})
    assert "NetworkPolicy" not in webhooks_docs(off)
    assert component(policy) == "webhooks"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"url": "ftp://hooks.example.com/x"}, id="not-http"),
        pytest.param({"url": "https://user:pass@hooks.example.com/x"}, id="userinfo"),
        pytest.param({"url": "https://hooks.example.com/a b"}, id="space"),
        pytest.param({"secret": "too-short"}, id="short-secret"),
        pytest.param({"events": ["opened"]}, id="unknown-event"),
        pytest.param({"events": []}, id="no-event"),
        pytest.param({"submitters": []}, id="no-submitter"),
        pytest.param({"name": "a/b"}, id="bad-name"),
        pytest.param({"extra": 1}, id="unknown-field"),
    ],
)
def test_the_schema_refuses_broken_endpoints(change: dict[str, Any]) -> None:
    values = {"webhooks": {"enabled": True, "endpoints": [{**ENDPOINT, **change}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, SCHEMA)


def test_helm_enforces_the_endpoint_schema() -> None:
    with pytest.raises(Exception, match="webhooks"):
        render({"webhooks": {"enabled": True, "endpoints": [{**ENDPOINT, "secret": "short"}]}})
    missing = {key: value for key, value in ENDPOINT.items() if key != "url"}
    with pytest.raises(Exception, match="url"):
        render({"webhooks": {"enabled": True, "endpoints": [missing]}})


def test_the_notes_describe_the_webhooks() -> None:
    notes = install(scenario_values(SCENARIO))["info"]["notes"]
    assert "Webhooks: 2 kubemta-webhooks pods POST delivery events" in notes
    assert "Secret kubemta-webhooks (key webhooks.json, from webhooks.endpoints)" in notes
    assert "443, 80, 8080 to any address" in notes
    assert "No endpoints yet" not in notes
