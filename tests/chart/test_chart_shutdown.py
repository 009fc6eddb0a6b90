"""The ingress' rollout: a preStop pause before SIGTERM, and a grace period that covers pause, drain and confirms."""

from typing import Any

import pytest

from tests.chart.render import render


def pod_specs(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = render(values)
    return {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] == "Deployment"
    }


def test_the_ingress_pauses_before_sigterm_and_its_grace_covers_pause_drain_and_confirms() -> None:
    pods = pod_specs({"config": {"drainSeconds": 30}})
    ingress = pods["smtp-ingress"]
    (container,) = ingress["containers"]
    assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    # pause 5 + drain 30 + a confirm still awaited (KUBEMTA_PUBLISH_TIMEOUT, 10 s) must fit
    assert ingress["terminationGracePeriodSeconds"] >= 5 + 30 + 10
    for name in ("queue-manager", "dns-resolver", "delivery-worker"):
        (other,) = pods[name]["containers"]
        assert "lifecycle" not in other, name


def test_the_pause_can_be_turned_off() -> None:
    (container,) = pod_specs({"smtpIngress": {"preStopSeconds": 0}})["smtp-ingress"]["containers"]
    assert "lifecycle" not in container


def test_a_grace_period_shorter_than_pause_and_drain_is_refused() -> None:
    with pytest.raises(Exception, match="preStop pause"):
        render(
            {"config": {"drainSeconds": 30}, "smtpIngress": {"preStopSeconds": 10, "terminationGracePeriodSeconds": 35}}
        )
