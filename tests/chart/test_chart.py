"""The Helm chart: lint, render (real Helm engine), Kubernetes schema validation, and what matters in it."""

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.chart.render import CHART, SCENARIOS, install, lint, render, scenario_values

KUBERNETES_VERSION = "1.31.0"
# Custom resources: no schema in kubernetes-validate; their required fields are checked below.
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule", "RabbitmqCluster"}
COMPONENTS = {
    "smtp-ingress": "kubemta-ingress",
    "queue-manager": "kubemta-queue-manager",
    "dns-resolver": "kubemta-dns-resolver",
    "delivery-worker": "kubemta-delivery-worker",
    "tracker": "kubemta-tracker",
    "webhooks": "kubemta-webhooks",
}
OPTIONAL_COMPONENTS = {"webhooks"}
"""Components off by default (`<key>.enabled`)."""
STAGE_QUEUES = {
    "queue-manager": ["inbound", "inbound.large", "results", "results.large"],
    "dns-resolver": ["route", "route.large"],
    "delivery-worker": ["deliver", "deliver.large"],
}
CASES = [pytest.param(None, id="chart-defaults"), *(pytest.param(path, id=path.name) for path in SCENARIOS)]

_cache: dict[Path | None, list[dict[str, Any]]] = {}


def manifests(scenario: Path | None) -> list[dict[str, Any]]:
    if scenario not in _cache:
        _cache[scenario] = render(scenario_values(scenario))
    return _cache[scenario]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {component(doc): doc for doc in of_kind(docs, "Deployment")}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def expected_components(scenario: Path | None) -> set[str]:
    """The components a scenario runs: all but the optional ones it does not enable."""
    values = scenario_values(scenario)
    return set(COMPONENTS) - {name for name in OPTIONAL_COMPONENTS if not values.get(name, {}).get("enabled")}


def test_scenarios_cover_keda_operator_and_tls() -> None:
    names = {path.name for path in SCENARIOS}
    assert {"keda-values.yaml", "no-keda-hpa-values.yaml", "operator-values.yaml", "tls-values.yaml"} <= names
    assert "dkim-values.yaml" in names
    values = {path.name: scenario_values(path) for path in SCENARIOS}
    assert values["keda-values.yaml"]["keda"]["enabled"] is True
    assert values["no-keda-hpa-values.yaml"]["keda"]["enabled"] is False
    assert values["operator-values.yaml"]["rabbitmq"]["cluster"]["create"] is True
    assert values["tls-values.yaml"]["tls"]["enabled"] is True
    assert values["dkim-values.yaml"]["dkim"]["keys"]


@pytest.mark.parametrize("scenario", CASES)
def test_helm_lint_is_clean(scenario: Path | None) -> None:
    assert lint(scenario_values(scenario)) == []


def test_helm_lint_reports_a_broken_value() -> None:
    assert ("error", "values.yaml") in lint({"smtpIngress": {"replicaCount": "many"}})


@pytest.mark.parametrize("scenario", CASES)
def test_manifests_validate_against_kubernetes_schemas(scenario: Path | None) -> None:
    docs = manifests(scenario)
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("scenario", CASES)
def test_custom_resources_have_their_required_fields(scenario: Path | None) -> None:
    docs = manifests(scenario)
    deployment_names = {doc["metadata"]["name"] for doc in of_kind(docs, "Deployment")}
    services = of_kind(docs, "Service")
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            continue
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
        spec = doc["spec"]
        match doc["kind"]:
            case "ScaledObject":
                assert doc["apiVersion"] == "keda.sh/v1alpha1"
                assert spec["scaleTargetRef"]["name"] in deployment_names
                assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
                queues = [trigger["metadata"]["queueName"] for trigger in spec["triggers"]]
                assert queues == STAGE_QUEUES[component(doc)]
                for trigger in spec["triggers"]:
                    assert trigger["type"] == "rabbitmq"
                    assert trigger["metadata"]["mode"] == "QueueLength"
                    assert int(trigger["metadata"]["value"]) >= 1
                    auth = trigger["authenticationRef"]["name"]
                    assert auth in {d["metadata"]["name"] for d in of_kind(docs, "TriggerAuthentication")}
                    assert "host" not in trigger["metadata"] or "@" not in trigger["metadata"]["host"]
            case "TriggerAuthentication":
                assert spec["secretTargetRef"]
                for ref in spec["secretTargetRef"]:
                    assert set(ref) == {"parameter", "name", "key"}
            case "ServiceMonitor":
                assert doc["apiVersion"] == "monitoring.coreos.com/v1"
                selector = spec["selector"]["matchLabels"]
                matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
                ports = {p["name"] for s in matching for p in s["spec"]["ports"]}
                assert "metrics" in ports
                assert spec["endpoints"][0]["port"] == "metrics" and spec["endpoints"][0]["path"] == "/metrics"
            case "PrometheusRule":
                assert doc["apiVersion"] == "monitoring.coreos.com/v1"
                for group in spec["groups"]:
                    assert group["name"] and group["rules"]
                    for rule in group["rules"]:
                        assert rule["expr"] and ("alert" in rule or "record" in rule)
            case "RabbitmqCluster":
                assert doc["apiVersion"] == "rabbitmq.com/v1beta1"
                assert spec["replicas"] >= 1
                assert "rabbitmq_prometheus" in spec["rabbitmq"]["additionalPlugins"]
                assert "return_per_object_metrics = true" in spec["rabbitmq"]["additionalConfig"]


@pytest.mark.parametrize("scenario", CASES)
def test_one_image_for_all_components_and_command_picks_the_service(scenario: Path | None) -> None:
    found = deployments(manifests(scenario))
    assert set(found) == expected_components(scenario)
    images = set()
    for name, deployment in found.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        images.add(container["image"])
        assert container["command"] == [COMPONENTS[name]]
        assert "args" not in container
    assert len(images) == 1


@pytest.mark.parametrize("scenario", CASES)
def test_hpa_and_scaledobject_never_both_for_one_component(scenario: Path | None) -> None:
    docs = manifests(scenario)
    hpas = {component(doc) for doc in of_kind(docs, "HorizontalPodAutoscaler")}
    scaled = {component(doc) for doc in of_kind(docs, "ScaledObject")}
    assert not hpas & scaled
    assert "smtp-ingress" not in scaled
    if scenario_values(scenario).get("keda", {}).get("enabled"):
        assert scaled == set(STAGE_QUEUES)
    else:
        assert not scaled and not of_kind(docs, "TriggerAuthentication")
    for deployment in of_kind(docs, "Deployment"):
        autoscaled = component(deployment) in hpas | scaled
        assert ("replicas" in deployment["spec"]) is not autoscaled


@pytest.mark.parametrize("scenario", CASES)
def test_pods_are_locked_down(scenario: Path | None) -> None:
    sa_auth = scenario_values(scenario).get("smtpIngress", {}).get("serviceAccountAuth", {}).get("enabled", True)
    for name, deployment in deployments(manifests(scenario)).items():
        pod = deployment["spec"]["template"]["spec"]
        # only the ingress gets a Kubernetes API token, for TokenReview of apps' tokens, and never the default account's
        if name == "smtp-ingress" and sa_auth:
            assert pod["automountServiceAccountToken"] is True
            assert pod["serviceAccountName"] == "kubemta-smtp-ingress"
        else:
            assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            assert all(port["containerPort"] >= 1024 for port in container["ports"])


@pytest.mark.parametrize("scenario", CASES)
def test_probes_and_grace_period(scenario: Path | None) -> None:
    docs = manifests(scenario)
    (config,) = [doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"].endswith("-config")]
    drain = int(config["data"]["KUBEMTA_DRAIN_SECONDS"].removesuffix("s"))
    metrics_listen = config["data"]["KUBEMTA_METRICS_LISTEN"]
    for deployment in deployments(docs).values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > drain
        (container,) = pod["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert metrics_listen == f"0.0.0.0:{ports['metrics']}"
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        assert "KUBEMTA_AMQP_URL" in env_of(container)


def test_grace_period_must_exceed_the_drain_time() -> None:
    with pytest.raises(Exception, match="must be longer than config.drainSeconds"):
        render({"config": {"drainSeconds": 60}, "deliveryWorker": {"terminationGracePeriodSeconds": 60}})


@pytest.mark.parametrize("scenario", CASES)
def test_smtp_service_maps_privileged_ports_to_the_containers(scenario: Path | None) -> None:
    docs = manifests(scenario)
    ingress = deployments(docs)["smtp-ingress"]
    (container,) = ingress["spec"]["template"]["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    (smtp,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("smtp-ingress")]
    mapping = {p["port"]: container_ports[p["targetPort"]] for p in smtp["spec"]["ports"]}
    tls = bool(scenario_values(scenario).get("tls", {}).get("enabled"))
    assert mapping == ({25: 2525, 587: 2587, 465: 2465} if tls else {25: 2525})
    env = env_of(container)
    assert env["KUBEMTA_SMTP_LISTEN"]["value"] == "0.0.0.0:2525"
    if tls:
        assert env["KUBEMTA_SUBMISSION_LISTEN"]["value"] == "0.0.0.0:2587"
        assert env["KUBEMTA_SMTPS_LISTEN"]["value"] == "0.0.0.0:2465"
        assert env["KUBEMTA_TLS_CERT_FILE"]["value"] == "/etc/kubemta/tls/tls.crt"
        assert env["KUBEMTA_TLS_KEY_FILE"]["value"] == "/etc/kubemta/tls/tls.key"
        assert smtp["spec"]["externalTrafficPolicy"] in ("Local", "Cluster")
    else:
        assert "KUBEMTA_SUBMISSION_LISTEN" not in env


@pytest.mark.parametrize("scenario", CASES)
def test_labels_come_from_the_helpers(scenario: Path | None) -> None:
    docs = manifests(scenario)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "kubemta"
        assert labels["app.kubernetes.io/instance"] == "kubemta"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "kubemta"
        assert labels["helm.sh/chart"].startswith("kubemta-")
        assert "app" not in labels
    for deployment in of_kind(docs, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in of_kind(docs, kind):
            selector = doc["spec"]["selector"] if kind == "PodDisruptionBudget" else doc["spec"]["podSelector"]
            assert selector["matchLabels"]["app.kubernetes.io/component"] == component(doc)


@pytest.mark.parametrize("scenario", CASES)
def test_network_policies_admit_only_what_each_component_needs(scenario: Path | None) -> None:
    docs = manifests(scenario)
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        egress_ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert "metrics" in ingress_ports
        assert {53, 5672} <= egress_ports
        if component(policy) == "smtp-ingress":
            assert {"smtp", "api"} <= ingress_ports  # the HTTP API is on by default
        elif component(policy) == "tracker":
            assert ingress_ports == {"metrics", "http"}
        else:
            assert ingress_ports == {"metrics"}
        assert (25 in egress_ports) is (component(policy) == "delivery-worker")
        # duplicate checks ask the tracker; webhooks never do
        assert (8025 in egress_ports) is (component(policy) not in ("tracker", "webhooks"))


def test_pdbs_by_default() -> None:
    pdbs = {component(doc): doc for doc in of_kind(manifests(None), "PodDisruptionBudget")}
    assert set(pdbs) == expected_components(None)
    assert all(doc["spec"]["maxUnavailable"] == 1 for doc in pdbs.values())


def test_operator_mode_builds_the_url_from_the_default_user_secret() -> None:
    (operator,) = [path for path in SCENARIOS if path.name == "operator-values.yaml"]
    docs = manifests(operator)
    for deployment in of_kind(docs, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "kubemta-rabbitmq-default-user"
        assert env["KUBEMTA_AMQP_URL"]["value"].startswith("amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@")
    secrets = [doc["metadata"]["name"] for doc in of_kind(docs, "Secret")]
    assert sorted(secrets) == ["kubemta-api-token", "kubemta-tracker-tokens"]  # no AMQP Secret


def test_dashboard_configmap_carries_the_dashboard() -> None:
    docs = manifests(None)
    (configmap,) = [doc for doc in of_kind(docs, "ConfigMap") if "dashboard" in doc["metadata"]["name"]]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["kubemta-overview.json"])
    assert shipped == json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())


def test_dashboard_conventions() -> None:
    dashboard = json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())
    assert dashboard["uid"] == "kubemta-overview"
    assert "kubemta" in dashboard["tags"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        if panel["type"] in ("row", "text"):
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for word in ("bounce", "deferral", "latency", "dns", "cache", "sessions", "per stage", "held"):
        assert word in titles
    for words in ("lifecycle events published", "events dropped", "duplicates suppressed", "duplicate checks"):
        assert words in titles
    (timeline,) = [panel for panel in dashboard["panels"] if panel["type"] == "text"]
    assert "kubemta-admin queue show <id>" in timeline["options"]["content"]


def test_notes_tell_how_to_send_a_test_mail_and_where_the_dashboard_is() -> None:
    notes = install(scenario_values(SCENARIOS[0]))["info"].get("notes", "")
    assert "kubemta-smtp-ingress.mail.svc:25" in notes
    assert "swaks --server" in notes
    assert "kubemta-overview" in notes


def test_values_schema_rejects_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    for path in SCENARIOS:
        jsonschema.validate(scenario_values(path), schema)
    bad: dict[str, Any]
    for bad in (
        {"ingress": {}},
        {"deliveryWorker": {"replicas": 3}},
        {"metrics": {"serviceMonitor": {"enable": True}}},
    ):
        with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
            jsonschema.validate(bad, schema)
    with pytest.raises(Exception, match="(?i)additional ?propert"):
        render({"deliveryWorker": {"replicas": 3}})


def test_values_yaml_points_at_its_schema() -> None:
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=./values.schema.json"
