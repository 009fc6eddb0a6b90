"""The PrometheusRule the chart renders: `promtool check rules` and `promtool test rules` on its groups, and every
alert's runbook: a `runbook_url` to its own section of docs/runbooks.md that says what it means and what to do."""

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tests.chart.render import REPO, render
from tests.chart.test_chart_apps_monitoring import github_anchors
from tests.harness.tools import promtool

RULE_VALUES = {"metrics": {"prometheusRule": {"enabled": True}}}
EVERY_RULE = {
    "metrics": {"prometheusRule": {"enabled": True}},
    "tracker": {"enabled": True},
    "webhooks": {"enabled": True},
}
RUNBOOKS = REPO / "docs" / "runbooks.md"
DEFAULT_RUNBOOKS = "https://github.com/kubemta/kubemta/blob/main/docs/runbooks.md"


def rule_groups(values: dict[str, Any] = RULE_VALUES) -> dict[str, Any]:
    """The `spec` of the rendered PrometheusRule, i.e. a Prometheus rule file."""
    (rule,) = [doc for doc in render(values) if doc["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def write_rules(directory: Path) -> Path:
    path = directory / "kubemta-rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False))
    return path


def test_promtool_check_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    result = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_promised_is_there() -> None:
    alerts = {rule["alert"] for group in rule_groups()["groups"] for rule in group["rules"]}
    assert {
        "KubemtaBounceRateHigh",
        "KubemtaInvalidRecipientBouncesHigh",
        "KubemtaDeferralRateHigh",
        "KubemtaBacklogGrowing",
        "KubemtaQueueTimeHigh",
        "KubemtaNoDeliveriesWhileQueued",
        "KubemtaIngressRejecting4xx",
        "KubemtaQueueUnavailable",
        "KubemtaBrokerDown",
        "KubemtaServiceDisconnectedFromBroker",
        "KubemtaHeldMessages",
        "KubemtaEventsDropped",
        "KubemtaTrackerNotReady",
        "KubemtaTrackerDown",
        "KubemtaTokenReviewErrors",
        "KubemtaApiUnavailable",
    } <= alerts
    without_tracker = rule_groups({**RULE_VALUES, "tracker": {"enabled": False}})
    alerts = {rule["alert"] for group in without_tracker["groups"] for rule in group["rules"]}
    assert "KubemtaEventsDropped" in alerts and not {"KubemtaTrackerNotReady", "KubemtaTrackerDown"} & alerts


def every_rule() -> list[dict[str, Any]]:
    """Every rule the chart can render (tracker and webhooks on)."""
    return [rule for group in rule_groups(EVERY_RULE)["groups"] for rule in group["rules"]]


def runbook_sections() -> dict[str, str]:
    """Heading's GitHub anchor -> the text up to the next heading, of docs/runbooks.md."""
    sections: dict[str, str] = {}
    anchor = ""
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("#"):
            (anchor,) = github_anchors(line)
            sections[anchor] = ""
        elif anchor:
            sections[anchor] += line + "\n"
    return sections


def test_every_alert_links_its_runbook_section() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    rules = every_rule()
    assert len(rules) >= 20
    for rule in rules:
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == DEFAULT_RUNBOOKS, rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_every_runbook_section_says_what_to_do_and_names_a_real_alert() -> None:
    alerts = {rule["alert"].lower(): rule["alert"] for rule in every_rule()}
    sections = runbook_sections()
    runbooks = {anchor: text for anchor, text in sections.items() if anchor.startswith("kubemta")}
    assert set(runbooks) == set(alerts)  # no alert without a section, no section of an alert that is gone
    for anchor, text in runbooks.items():
        assert "**What to do.**" in text, alerts[anchor]
        assert re.search(r"\*\*Severity\*\* (critical|warning)|critical\*\*|warning\*\*", text), alerts[anchor]


def test_the_runbook_check_catches_a_missing_section() -> None:
    """The anchor check above would fail for an alert whose section is not there."""
    assert "kubemtabounceratehigh" in github_anchors(RUNBOOKS.read_text())
    assert "kubemtabounceratehigh" not in github_anchors(RUNBOOKS.read_text().replace("KubemtaBounceRateHigh", "X"))


def test_the_invalid_recipient_alert_reads_the_class_label() -> None:
    (rule,) = [rule for rule in every_rule() if rule["alert"] == "KubemtaInvalidRecipientBouncesHigh"]
    assert rule["expr"].count('kubemta_recipients_bounced_total{class="invalid_recipient"}') == 2
    assert "> 0.02" in rule["expr"] and rule["labels"]["severity"] == "warning"


def bounced(provider: str, bounce_class: str, job: str = "qm") -> str:
    """A series of the queue-manager's bounce counter, with the class label the classification gives it."""
    return f'kubemta_recipients_bounced_total{{job="{job}", provider="{provider}", class="{bounce_class}"}}'


RMQ = 'job="rabbitmq", vhost="/"'
TRACKER = 'namespace="mail", deployment="kubemta-tracker", job="kube-state-metrics"'
UNIT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "name": "bounce rate above 5% fires, and only after 15 minutes",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_recipients_bounced_total{job="qm", provider="other"}', "values": "0+3x60"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="other"}', "values": "0+7x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "KubemtaBounceRateHigh", "exp_alerts": []},
                {
                    "eval_time": "40m",
                    "alertname": "KubemtaBounceRateHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
            ],
        },
        {
            "name": "a low bounce rate stays quiet",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_recipients_bounced_total{job="qm", provider="other"}', "values": "0+1x60"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="other"}', "values": "0+100x60"},
            ],
            "alert_rule_test": [{"eval_time": "60m", "alertname": "KubemtaBounceRateHigh", "exp_alerts": []}],
        },
        {
            "name": "invalid recipients above 2% of finished recipients for 30 minutes fire (list hygiene)",
            "interval": "1m",
            "input_series": [
                {"series": bounced("google", "invalid_recipient"), "values": "0+1x120"},
                {"series": bounced("google", "mailbox_full"), "values": "0+1x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="google"}', "values": "0+30x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "KubemtaInvalidRecipientBouncesHigh", "exp_alerts": []},
                {
                    "eval_time": "60m",
                    "alertname": "KubemtaInvalidRecipientBouncesHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
            ],
        },
        {
            "name": "invalid recipients stay quiet below 2%, or when they are few, however other classes bounce",
            "interval": "1m",
            "input_series": [
                {"series": bounced("google", "invalid_recipient"), "values": "0+1x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="google"}', "values": "0+100x120"},
                {"series": bounced("yahoo", "reputation"), "values": "0+50x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "110m", "alertname": "KubemtaInvalidRecipientBouncesHigh", "exp_alerts": []},
            ],
        },
        {
            "name": "a dozen invalid recipients an hour at a low volume stay quiet, however high their share",
            "interval": "1m",
            "input_series": [
                {"series": bounced("other", "invalid_recipient"), "values": "0+0.2x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="other"}', "values": "0+1x120"},
            ],
            "alert_rule_test": [
                {"eval_time": "110m", "alertname": "KubemtaInvalidRecipientBouncesHigh", "exp_alerts": []},
            ],
        },
        {
            "name": "deferrals high for one provider only",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_recipients_deferred_total{job="qm", provider="microsoft"}', "values": "0+5x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="microsoft"}', "values": "0+5x120"},
                {"series": 'kubemta_recipients_bounced_total{job="qm", provider="microsoft"}', "values": "0+0x120"},
                {"series": 'kubemta_recipients_deferred_total{job="qm", provider="google"}', "values": "0+1x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="google"}', "values": "0+50x120"},
                {"series": 'kubemta_recipients_bounced_total{job="qm", provider="google"}', "values": "0+0x120"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "90m",
                    "alertname": "KubemtaDeferralRateHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "provider": "microsoft"}}],
                }
            ],
        },
        {
            "name": "deferrals high for one provider, counted by the queue-manager and deliveries by the worker",
            "interval": "1m",
            "input_series": [
                {"series": bounced("microsoft", "rate_limited").replace("bounced", "deferred"), "values": "0+5x120"},
                {"series": 'kubemta_recipients_delivered_total{job="qm", provider="microsoft"}', "values": "0+0x120"},
                {"series": 'kubemta_recipients_delivered_total{job="dw", provider="microsoft"}', "values": "0+5x120"},
                {"series": bounced("microsoft", "other"), "values": "0+0x120"},
                {"series": bounced("google", "rate_limited").replace("bounced", "deferred"), "values": "0+1x120"},
                {"series": 'kubemta_recipients_delivered_total{job="dw", provider="google"}', "values": "0+50x120"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "90m",
                    "alertname": "KubemtaDeferralRateHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "provider": "microsoft"}}],
                }
            ],
        },
        {
            "name": "mail waits in deliver while no worker attempts anything",
            "interval": "1m",
            "input_series": [
                {"series": f'rabbitmq_queue_messages{{{RMQ}, queue="deliver"}}', "values": "0+0x5 40x60"},
                {"series": 'kubemta_delivery_attempts_total{job="dw", result="delivered"}', "values": "0+2x5 10x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "KubemtaNoDeliveriesWhileQueued", "exp_alerts": []},
                {
                    "eval_time": "40m",
                    "alertname": "KubemtaNoDeliveriesWhileQueued",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
        {
            "name": "no worker at all while mail is queued also fires",
            "interval": "1m",
            "input_series": [{"series": f'rabbitmq_queue_messages{{{RMQ}, queue="deliver"}}', "values": "5x30"}],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "KubemtaNoDeliveriesWhileQueued",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                }
            ],
        },
        {
            "name": "a growing route backlog fires for that queue",
            "interval": "1m",
            "input_series": [
                {"series": f'rabbitmq_queue_messages_ready{{{RMQ}, queue="route"}}', "values": "900+20x60"},
                {"series": f'rabbitmq_queue_messages_ready{{{RMQ}, queue="deliver"}}', "values": "5000x60"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "45m",
                    "alertname": "KubemtaBacklogGrowing",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "queue": "route"}}],
                }
            ],
        },
        {
            "name": "a growing backlog in a large lane fires too, and only large mail waiting still counts as queued",
            "interval": "1m",
            "input_series": [
                {"series": f'rabbitmq_queue_messages_ready{{{RMQ}, queue="deliver.large"}}', "values": "900+20x60"},
                {"series": f'rabbitmq_queue_messages{{{RMQ}, queue="deliver.large"}}', "values": "5x60"},
                {"series": f'rabbitmq_queue_messages_ready{{{RMQ}, queue="dsn"}}', "values": "900+20x60"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "45m",
                    "alertname": "KubemtaBacklogGrowing",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "queue": "deliver.large"}}],
                },
                {
                    "eval_time": "45m",
                    "alertname": "KubemtaNoDeliveriesWhileQueued",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
        {
            "name": "held messages",
            "interval": "1m",
            "input_series": [{"series": f'rabbitmq_queue_messages{{{RMQ}, queue="held"}}', "values": "0 0 1x20"}],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KubemtaHeldMessages", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "KubemtaHeldMessages",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
            ],
        },
        {
            "name": "the ingress answers 451 because the broker does not confirm",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'kubemta_messages_rejected_total{job="in", reason="queue_unavailable"}',
                    "values": "0+10x30",
                },
                {"series": 'kubemta_messages_rejected_total{job="in", reason="relay_denied"}', "values": "0+100x30"},
                {"series": 'kubemta_messages_received_total{job="in"}', "values": "0+50x30"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "25m",
                    "alertname": "KubemtaQueueUnavailable",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
                {
                    "eval_time": "25m",
                    "alertname": "KubemtaIngressRejecting4xx",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
            ],
        },
        {
            "name": "permanent rejections are not 4xx",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_messages_rejected_total{job="in", reason="relay_denied"}', "values": "0+100x30"},
                {"series": 'kubemta_messages_received_total{job="in"}', "values": "0+50x30"},
            ],
            "alert_rule_test": [{"eval_time": "25m", "alertname": "KubemtaIngressRejecting4xx", "exp_alerts": []}],
        },
        {
            "name": "broker down",
            "interval": "1m",
            "input_series": [{"series": 'up{job="rabbitmq", instance="rabbit-0"}', "values": "1 1 0x10"}],
            "alert_rule_test": [
                {
                    "eval_time": "8m",
                    "alertname": "KubemtaBrokerDown",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                }
            ],
        },
        {
            "name": "a service disconnected from the broker",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_broker_connected{job="qm", service="queue-manager"}', "values": "1 1 0x10"},
                {"series": 'kubemta_broker_connected{job="in", service="ingress"}', "values": "1x12"},
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "KubemtaServiceDisconnectedFromBroker", "exp_alerts": []},
                {
                    "eval_time": "8m",
                    "alertname": "KubemtaServiceDisconnectedFromBroker",
                    "exp_alerts": [{"exp_labels": {"severity": "critical", "service": "queue-manager"}}],
                },
            ],
        },
        {
            "name": "lifecycle events dropped fire per job, and stop once none are dropped",
            "interval": "1m",
            "input_series": [
                {
                    "series": 'kubemta_events_dropped_total{job="kubemta-delivery-worker-metrics"}',
                    "values": "0x5 0+50x5 250x30",
                },
                {"series": 'kubemta_events_dropped_total{job="kubemta-queue-manager-metrics"}', "values": "0x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KubemtaEventsDropped", "exp_alerts": []},
                {
                    "eval_time": "9m",
                    "alertname": "KubemtaEventsDropped",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "kubemta-delivery-worker-metrics"}}],
                },
                {"eval_time": "30m", "alertname": "KubemtaEventsDropped", "exp_alerts": []},
            ],
        },
        {
            "name": "a tracker replica not ready for 10 minutes, then none at all",
            "interval": "1m",
            "input_series": [
                {
                    "series": f"kube_deployment_status_replicas_unavailable{{{TRACKER}}}",
                    "values": "0x3 1x15 2x15",
                },
                {
                    "series": f"kube_deployment_status_replicas_available{{{TRACKER}}}",
                    "values": "2x3 1x15 0x15",
                },
                {
                    "series": 'kube_deployment_status_replicas_unavailable{namespace="other", deployment="kubemta-tracker"}',  # noqa: E501
                    "values": "1x33",
                },
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "KubemtaTrackerNotReady", "exp_alerts": []},
                {
                    "eval_time": "16m",
                    "alertname": "KubemtaTrackerNotReady",
                    "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                },
                {"eval_time": "16m", "alertname": "KubemtaTrackerDown", "exp_alerts": []},
                {
                    "eval_time": "26m",
                    "alertname": "KubemtaTrackerDown",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
    ],
}


def test_promtool_unit_tests(tmp_path: Path) -> None:
    # promtool compares annotations exactly; they are checked by `promtool check rules`, the unit tests
    # are about when each alert fires and with which labels.
    groups = rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "kubemta-rules.yaml"
    rules.write_text(yaml.safe_dump(groups, sort_keys=False))
    tests = tmp_path / "kubemta-rules.test.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [rules.name], **UNIT_TESTS}, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", tests.name], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
