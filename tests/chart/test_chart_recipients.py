"""The chart's recipient verification (smtpIngress.recipientVerification): the ingress reads KUBEMTA_TRANSPORTS
from the shared ConfigMap, its NetworkPolicy admits the LMTP ports of the transports while probes are on, and
a recipient-map ConfigMap is mounted as a directory (so updates reach the pod) with KUBEMTA_RECIPIENT_MAPS."""

from typing import Any

import pytest

from tests.chart.render import SCENARIOS, render, scenario_values
from tests.chart.test_chart import component, deployments, env_of, manifests, of_kind
from tests.chart.test_chart_settings import config_data

(RECIPIENTS,) = [path for path in SCENARIOS if path.name == "recipients-values.yaml"]


def ingress_container(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = deployments(docs)["smtp-ingress"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def egress_ports(docs: list[dict[str, Any]], name: str) -> set[int | str]:
    (policy,) = [doc for doc in of_kind(docs, "NetworkPolicy") if component(doc) == name]
    return {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}


def value(container: dict[str, Any], name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else str(entry["value"])


def test_by_default_lmtp_routes_are_verified_and_nothing_else_is_opened() -> None:
    docs = manifests(None)
    pod, container = ingress_container(docs)
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY") == "true"
    assert value(container, "KUBEMTA_RECIPIENT_MAPS") is None
    assert "KUBEMTA_TRANSPORTS" in config_data(docs)  # the ingress gets the routes from the shared ConfigMap
    # 8025: the tracker (duplicate checks); 443 and 6443: the Kubernetes API (TokenReview of apps' tokens)
    assert egress_ports(docs, "smtp-ingress") == {53, 5672, 5671, 8025, 443, 6443}
    assert "recipient-maps" not in {volume["name"] for volume in pod["volumes"]}


def test_the_ingress_may_reach_the_lmtp_ports_of_the_transports() -> None:
    docs = manifests(RECIPIENTS)
    ports = egress_ports(docs, "smtp-ingress")
    assert {24, 2424} <= ports  # `lmtp:dovecot.mail.svc` without a port is 24
    assert 587 not in ports  # an smtp: transport is the worker's business


def test_a_recipient_map_configmap_is_mounted_as_a_directory() -> None:
    pod, container = ingress_container(manifests(RECIPIENTS))
    assert value(container, "KUBEMTA_RECIPIENT_MAPS") == "example.org=/etc/kubemta/recipients/example.org"
    assert value(container, "KUBEMTA_RECIPIENT_DELIMITER") == "+"
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY_TIMEOUT") == "5s"
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY_CONCURRENCY") == "10"
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY_NEGATIVE_TTL") == "5m"
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY_POSITIVE_TTL") is None  # unset: the service's default
    [mount] = [mount for mount in container["volumeMounts"] if mount["name"] == "recipient-maps"]
    assert mount == {"name": "recipient-maps", "mountPath": "/etc/kubemta/recipients", "readOnly": True}
    [volume] = [volume for volume in pod["volumes"] if volume["name"] == "recipient-maps"]
    assert volume["configMap"] == {"name": "kubemta-recipients"}
    for name, deployment in deployments(manifests(RECIPIENTS)).items():
        if name != "smtp-ingress":
            assert "recipient-maps" not in str(deployment)


def test_turning_probes_off_closes_the_lmtp_ports() -> None:
    values = scenario_values(RECIPIENTS)
    values["smtpIngress"]["recipientVerification"]["enabled"] = False
    docs = render(values)
    _, container = ingress_container(docs)
    assert value(container, "KUBEMTA_RECIPIENT_VERIFY") == "false"
    assert not {24, 2424} & egress_ports(docs, "smtp-ingress")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mapsConfigMap": "maps"}, "list its domains"),
        ({"mapDomains": ["example.org"]}, "set mapsConfigMap"),
    ],
)
def test_half_a_map_configuration_is_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        render({"smtpIngress": {"recipientVerification": settings}})
