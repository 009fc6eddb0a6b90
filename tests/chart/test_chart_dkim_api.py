"""The chart's DKIM key mounts and the smtp-ingress HTTP API: projected key paths (private keys in the
queue-manager only, public keys in the smtp-ingress only), read-only mounts, the API's listener, ClusterIP
Service and NetworkPolicy rule, and the sending IPs."""

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.chart.render import CHART, SCENARIOS, install, render, scenario_values
from tests.chart.test_chart import component, deployments, env_of, manifests, of_kind
from tests.chart.test_chart_settings import config_data

(DKIM,) = [path for path in SCENARIOS if path.name == "dkim-values.yaml"]
(TLS,) = [path for path in SCENARIOS if path.name == "tls-values.yaml"]
KEYS_DIR = "/etc/kubemta/dkim"
DKIM_MOUNT = {"name": "dkim", "mountPath": KEYS_DIR, "readOnly": True}
MOUNTED_INTO = {"smtp-ingress", "queue-manager"}
SUFFIX = {"smtp-ingress": ".pub", "queue-manager": ".key"}
"""Which half of each key a component gets: the internet-facing ingress never a private key."""


def pod_of(deployment: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, its only container)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {volume["name"]: volume for volume in pod["volumes"]}


def ingress_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [doc for doc in of_kind(docs, "NetworkPolicy") if component(doc) == "smtp-ingress"]
    return policy


def api_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ingress NetworkPolicy rules that admit the `api` port."""
    return [rule for rule in ingress_policy(docs)["spec"]["ingress"] if any(p["port"] == "api" for p in rule["ports"])]


def services(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Service")}


# --- DKIM keys ---------------------------------------------------------------------------------


def test_private_keys_go_to_the_queue_manager_and_public_keys_to_the_ingress() -> None:
    docs = manifests(DKIM)
    expected = {
        "queue-manager": [
            {"key": "example.com_2026rsa.key", "path": "example.com/2026rsa.key"},
            {"key": "example.com_2026ed.key", "path": "example.com/2026ed.key"},
            {"key": "example-org-k1", "path": "mail.example.org/k1.key"},
        ],
        "smtp-ingress": [
            {"key": "example.com_2026rsa.pub", "path": "example.com/2026rsa.pub"},
            {"key": "example.com_2026ed.pub", "path": "example.com/2026ed.pub"},
            {"key": "example-org-k1-public", "path": "mail.example.org/k1.pub"},
        ],
    }
    for name, deployment in deployments(docs).items():
        pod, container = pod_of(deployment)
        env = env_of(container)
        if name not in MOUNTED_INTO:
            assert "dkim" not in volumes_of(pod) and "KUBEMTA_DKIM_KEYS_DIR" not in env, name
            assert not [mount for mount in container["volumeMounts"] if mount["name"] == "dkim"], name
            continue
        assert env["KUBEMTA_DKIM_KEYS_DIR"] == {"name": "KUBEMTA_DKIM_KEYS_DIR", "value": KEYS_DIR}, name
        assert [mount for mount in container["volumeMounts"] if mount["name"] == "dkim"] == [DKIM_MOUNT], name
        secret: dict[str, object] = {"secretName": "kubemta-dkim", "items": expected[name]}
        if name == "smtp-ingress":
            secret["optional"] = True  # a missing public key shows in the domain check, never stops SMTP
        assert volumes_of(pod)["dkim"]["secret"] == secret, name


def test_every_dkim_scenario_mounts_only_its_half_of_each_key_read_only() -> None:
    for scenario in SCENARIOS:
        keys = scenario_values(scenario).get("dkim", {}).get("keys", [])
        if not keys:
            continue
        for name, deployment in deployments(manifests(scenario)).items():
            pod, container = pod_of(deployment)
            secrets = [volume["secret"] for volume in pod["volumes"] if "secret" in volume]
            if name not in MOUNTED_INTO:
                assert all(secret["secretName"] != "kubemta-dkim" for secret in secrets), (scenario.name, name)
                continue
            assert DKIM_MOUNT in container["volumeMounts"], (scenario.name, name)
            items = volumes_of(pod)["dkim"]["secret"]["items"]
            suffix = SUFFIX[name]
            assert [item["path"] for item in items] == [f"{key['domain']}/{key['selector']}{suffix}" for key in keys], (
                scenario.name,
                name,
            )
            assert all("/" not in item["key"] for item in items)
            # the Secret reaches this pod through these items only: no other volume names it
            assert [secret for secret in secrets if secret["secretName"] == "kubemta-dkim"] == [
                volumes_of(pod)["dkim"]["secret"]
            ], (scenario.name, name)
        ingress_items = volumes_of(pod_of(deployments(manifests(scenario))["smtp-ingress"])[0])["dkim"]["secret"]
        assert not [item for item in ingress_items["items"] if not item["path"].endswith(".pub")], scenario.name
        assert not [item for item in ingress_items["items"] if item["key"].endswith(".key")], scenario.name


def test_without_dkim_keys_nothing_is_mounted() -> None:
    for deployment in deployments(manifests(None)).values():
        pod, container = pod_of(deployment)
        assert "dkim" not in volumes_of(pod)
        assert "KUBEMTA_DKIM_KEYS_DIR" not in env_of(container)


def test_a_dkim_secret_needs_its_keys_listed_and_keys_need_the_secret() -> None:
    with pytest.raises(Exception, match=r"list its keys in dkim\.keys"):
        render({"dkim": {"existingSecret": "kubemta-dkim"}})
    with pytest.raises(Exception, match=r"set dkim\.existingSecret"):
        render({"dkim": {"keys": [{"domain": "example.com", "selector": "s1"}]}})


def test_schema_checks_the_dkim_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    good = {"dkim": {"existingSecret": "s", "keys": [{"domain": "Mail.Example.com", "selector": "2026a"}]}}
    jsonschema.validate(good, schema)
    named = {"domain": "example.com", "selector": "s1", "secretKey": "s1-private", "publicKey": "s1-public"}
    jsonschema.validate({"dkim": {"existingSecret": "s", "keys": [named]}}, schema)
    for key in (
        {"domain": "example.com", "selector": "a/b"},
        {"domain": "../etc", "selector": "s1"},
        {"domain": "example.com.", "selector": "s1"},
        {"domain": "example.com", "selector": 2026},  # unquoted numeric selector
        {"domain": "example.com"},
        {"domain": "example.com", "selector": "s1", "secretKey": "example.com/s1.key"},
        {"domain": "example.com", "selector": "s1", "publicKey": "example.com/s1.pub"},
        {"domain": "example.com", "selector": "s1", "path": "x"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"dkim": {"existingSecret": "s", "keys": [key]}}, schema)


# --- the ingress HTTP API ----------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [None, DKIM, TLS], ids=["chart-defaults", "dkim-values", "tls-values"])
def test_the_ingress_serves_its_api_on_a_cluster_ip_service(scenario: Any) -> None:
    docs = manifests(scenario)
    api = scenario_values(scenario).get("smtpIngress", {}).get("api", {})
    _, container = pod_of(deployments(docs)["smtp-ingress"])
    assert env_of(container)["KUBEMTA_HTTP_LISTEN"]["value"] == "0.0.0.0:8080"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["api"] == 8080
    found = services(docs)
    service = found["kubemta-smtp-ingress-api"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "api", "port": api.get("port", 8080), "targetPort": "api", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "smtp-ingress"
    # never on the SMTP Service (a LoadBalancer in the TLS scenario)
    assert "api" not in {port["targetPort"] for port in found["kubemta-smtp-ingress"]["spec"]["ports"]}
    for name, deployment in deployments(docs).items():
        if name != "smtp-ingress":
            assert "KUBEMTA_HTTP_LISTEN" not in env_of(pod_of(deployment)[1])


def test_the_api_is_admitted_from_the_release_namespace_by_default() -> None:
    (rule,) = api_rules(manifests(None))
    assert rule == {"ports": [{"port": "api", "protocol": "TCP"}], "from": [{"podSelector": {}}]}


def test_the_api_network_policy_sources_are_configurable() -> None:
    (rule,) = api_rules(manifests(DKIM))
    assert rule["from"] == scenario_values(DKIM)["smtpIngress"]["networkPolicy"]["apiFrom"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]
    (anyone,) = api_rules(render({"smtpIngress": {"networkPolicy": {"apiFrom": []}}}))
    assert "from" not in anyone


def test_a_disabled_api_has_no_listener_port_service_or_rule() -> None:
    docs = render({"smtpIngress": {"api": {"enabled": False}}})
    _, container = pod_of(deployments(docs)["smtp-ingress"])
    assert env_of(container)["KUBEMTA_HTTP_LISTEN"]["value"] == ""  # empty: off, not the app's loopback default
    assert "api" not in {port["name"] for port in container["ports"]}
    assert "kubemta-smtp-ingress-api" not in services(docs)
    assert api_rules(docs) == []


# --- sending IPs and NOTES ---------------------------------------------------------------------


def test_sending_ips_land_in_the_configmap_only_when_set() -> None:
    assert config_data(manifests(DKIM))["KUBEMTA_SENDING_IPS"] == "192.0.2.25,2001:db8::25"
    assert "KUBEMTA_SENDING_IPS" not in config_data(manifests(None))
    schema = json.loads((CHART / "values.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"config": {"sendingIps": ["mta.example.com"]}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"config": {"sendingIps": "192.0.2.25"}}, schema)


def test_notes_tell_how_to_reach_the_domain_check_and_list_the_dkim_keys() -> None:
    notes = install(scenario_values(DKIM))["info"].get("notes", "")
    assert "kubectl port-forward -n mail svc/kubemta-smtp-ingress-api 8080:80" in notes
    assert "curl http://127.0.0.1:8080/v1/domains/example.com/check" in notes
    assert "example.com/2026rsa.key  <- Secret key example.com_2026rsa.key" in notes
    assert "mail.example.org/k1.key  <- Secret key example-org-k1" in notes
    assert "example.com/2026rsa.pub  <- Secret key example.com_2026rsa.pub" in notes
    assert "mail.example.org/k1.pub  <- Secret key example-org-k1-public" in notes
    private, public = notes.index("private keys in the queue-manager pods only"), notes.index("public keys")
    assert private < notes.index("k1.key") < public < notes.index("k1.pub")
    defaults = install({})["info"].get("notes", "")
    assert "svc/kubemta-smtp-ingress-api 8080:8080" in defaults and "DKIM:" not in defaults
