"""The monitoring of the apps' side: the dashboard row "Apps: sending API, identities, webhooks" and the alerts
KubemtaTokenReviewErrors, KubemtaApiUnavailable, KubemtaWebhooksNoReader and KubemtaWebhooksFailing.

Every metric and label value the row and the alerts name is checked against the services' own metric objects
(imported, so a renamed metric or result fails here); `promtool test rules` proves when each alert fires;
each alert links its section of docs/runbooks.md. test_monitoring_e2e.py evaluates the same queries and
rules against a real Prometheus scraping the running services (the webhooks component included).
"""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import REGISTRY

import kubemta_ingress.__main__  # noqa: F401 - registers every ingress metric, as the running service does
from kubemta_webhooks import metrics as webhook_metrics
from tests.chart.render import CHART, REPO, render
from tests.harness.tools import promtool

ROW = "Apps: sending API, identities, webhooks"
ALERTS = {"KubemtaTokenReviewErrors", "KubemtaApiUnavailable", "KubemtaWebhooksNoReader", "KubemtaWebhooksFailing"}
WEBHOOK_ALERTS = {"KubemtaWebhooksNoReader", "KubemtaWebhooksFailing"}
RULES_ON = {"metrics": {"prometheusRule": {"enabled": True}}}
WEBHOOKS_ON = {**RULES_ON, "webhooks": {"enabled": True}}
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULT_DOCS = "https://github.com/kubemta/kubemta/blob/main/docs"
WEBHOOKS_JOB = 'job="kubemta-webhooks-metrics"'
UNCHECKED_LABELS = {"namespace", "job", "le"}  # added by the scrape, or the histogram's own

_rendered: dict[str, list[dict[str, Any]]] = {}


def rules(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rendered PrometheusRule's rules, each with its group's name under "group"."""
    key = json.dumps(values, sort_keys=True)
    if key not in _rendered:
        (rule,) = [doc for doc in render(values) if doc["kind"] == "PrometheusRule"]
        _rendered[key] = [{**r, "group": g["name"]} for g in rule["spec"]["groups"] for r in g["rules"]]
    return _rendered[key]


def apps_panels() -> list[dict[str, Any]]:
    """The panels of the apps row: after its row panel, up to the next row."""
    panels = json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())["panels"]
    (start,) = [n for n, panel in enumerate(panels) if panel["type"] == "row" and panel["title"] == ROW]
    found = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        found.append(panel)
    return found


def test_the_row_has_its_panels() -> None:
    panels = apps_panels()
    titles = [panel["title"] for panel in panels]
    assert titles == [
        "API messages by result",
        "API accept latency (checked message to 202)",
        "API requests refused before routing",
        "ServiceAccount token checks by result",
        "API key checks by result",
        "SMTP AUTH attempts by result",
        "Webhook deliveries by result",
        "Webhook reader (leader) and its lag",
        "Webhook delivery duration",
    ]
    exprs = {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in panels}
    assert any("kubemta_tokenreview_cache_total" in expr for expr in exprs["ServiceAccount token checks by result"])
    assert [expr.split("(")[0] for expr in exprs["Webhook reader (leader) and its lag"]] == ["sum", "max"]
    assert all(
        "0.99" in " ".join(exprs[title])
        for title in ("API accept latency (checked message to 202)", "Webhook delivery duration")
    )
    ids = [panel["id"] for panel in json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["description"], panel["title"]
        assert all('namespace=~"$namespace"' in target["expr"] for target in panel["targets"]), panel["title"]


def code_samples() -> dict[str, dict[str, set[str]]]:
    """Sample name -> label -> values, from the metric objects the services register (what /metrics shows)."""
    found: dict[str, dict[str, set[str]]] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = found.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    # the deliveries' series exist per endpoint of the file (preinitialise_endpoints): their results are RESULTS
    for suffix in ("_total", "_created"):
        found["kubemta_webhook_deliveries" + suffix] = {"endpoint": {"any"}, "result": set(webhook_metrics.RESULTS)}
    return found


SELECTOR = re.compile(r"\b(kubemta_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def named_in(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, its matchers as (label, operator, value)) of every selector in `expr`."""
    return [(metric, MATCHER.findall(matchers)) for metric, matchers in SELECTOR.findall(expr)]


def expressions() -> list[tuple[str, str]]:
    exprs = [(panel["title"], target["expr"]) for panel in apps_panels() for target in panel["targets"]]
    exprs += [(rule["alert"], rule["expr"]) for rule in rules(WEBHOOKS_ON) if rule["alert"] in ALERTS]
    return exprs


def unknown_names(where: str, expr: str, samples: dict[str, dict[str, set[str]]]) -> list[str]:
    """What `expr` names that the services never expose: a metric, or a value of a label."""
    problems = []
    for metric, matchers in named_in(expr):
        if metric not in samples:
            problems.append(f"{where}: {metric} is no metric of the services")
            continue
        for label, op, value in matchers:
            if label in UNCHECKED_LABELS:
                continue
            known = samples[metric].get(label, set())
            wanted = value.split("|") if op in ("=~", "!~") else [value]
            problems += [f"{where}: {metric}{{{label}={v!r}}} never exists" for v in wanted if v not in known]
    return problems


def test_every_metric_and_label_value_named_is_the_services() -> None:
    samples = code_samples()
    found = expressions()
    assert len(found) >= 17  # 13 panel queries, 4 alerts
    problems = [problem for where, expr in found for problem in unknown_names(where, expr, samples)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ('sum(rate(kubemta_api_message_total{result="queued"}[1m]))', "is no metric"),
        ('sum(rate(kubemta_api_messages_total{result="accepted"}[1m]))', "{result='accepted'} never exists"),
        ('kubemta_webhook_deliveries_total{result=~"delivered|dropped"}', "{result='dropped'} never exists"),
        ("histogram_quantile(0.5, rate(kubemta_webhook_delivery_second_bucket[1m]))", "is no metric"),
    ],
)
def test_the_name_check_catches_a_wrong_name(expr: str, complaint: str) -> None:
    (problem,) = unknown_names("panel", expr, code_samples())
    assert complaint in problem


def test_webhooks_alerts_only_with_webhooks() -> None:
    without = {rule["alert"] for rule in rules(RULES_ON)}
    assert {"KubemtaTokenReviewErrors", "KubemtaApiUnavailable"} <= without
    assert not WEBHOOK_ALERTS & without
    with_webhooks = [rule for rule in rules(WEBHOOKS_ON) if rule["alert"] in WEBHOOK_ALERTS]
    assert sorted((rule["alert"], rule["labels"]["severity"]) for rule in with_webhooks) == [
        ("KubemtaWebhooksFailing", "critical"),
        ("KubemtaWebhooksFailing", "warning"),
        ("KubemtaWebhooksNoReader", "critical"),
    ]
    assert {rule["group"] for rule in with_webhooks} == {"kubemta.webhooks"}
    assert all(WEBHOOKS_JOB in rule["expr"] for rule in with_webhooks)


def github_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, spaces to dashes, other punctuation dropped."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def test_each_new_alert_has_a_summary_a_description_and_its_runbook() -> None:
    anchors = github_anchors((REPO / "docs" / "runbooks.md").read_text())
    new = [rule for rule in rules(WEBHOOKS_ON) if rule["alert"] in ALERTS]
    assert {rule["alert"] for rule in new} == ALERTS
    for rule in new:
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        base, _, anchor = annotations["runbook_url"].partition("#")
        assert base == f"{DEFAULT_DOCS}/runbooks.md"
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
    (tokenreview,) = [rule for rule in new if rule["alert"] == "KubemtaTokenReviewErrors"]
    assert "unreachable" in tokenreview["annotations"]["description"]
    assert "RBAC" in tokenreview["annotations"]["description"]


def test_the_docs_base_url_is_a_value() -> None:
    values = {
        **WEBHOOKS_ON,
        "metrics": {"prometheusRule": {"enabled": True, "docsBaseUrl": "https://docs.example.com/mta/"}},
    }
    urls = {rule["annotations"]["runbook_url"] for rule in rules(values) if rule["alert"] in ALERTS}
    assert urls == {f"https://docs.example.com/mta/runbooks.md#{alert.lower()}" for alert in ALERTS}


@pytest.mark.parametrize(
    "url",
    [
        "https://docs.example.com/x\n",
        "https://docs.example.com/x\nrunbook: y",
        'https://docs.example.com/"x',
        "https://docs.example.com/x y",
        "https://docs.example.com/\u2028x",
        "javascript:alert(1)",
        "docs/runbooks",
        "",
    ],
)
def test_the_schema_refuses_a_broken_docs_base_url(url: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"metrics": {"prometheusRule": {"docsBaseUrl": url}}}, SCHEMA)


@pytest.mark.parametrize("key", ["apiUnavailableRatioThreshold", "webhookRetryRatioThreshold"])
@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5"])
def test_the_schema_refuses_a_ratio_outside_0_1(key: str, value: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"metrics": {"prometheusRule": {key: value}}}, SCHEMA)


def test_helm_enforces_the_docs_base_url_schema() -> None:
    with pytest.raises(Exception, match="docsBaseUrl"):
        render({"metrics": {"prometheusRule": {"enabled": True, "docsBaseUrl": "https://x.example/a b"}}})


def webhooks(endpoint: str, result: str) -> str:
    return (
        f'kubemta_webhook_deliveries_total{{{WEBHOOKS_JOB}, instance="w-0", endpoint="{endpoint}", result="{result}"}}'
    )


def leader(instance: str, job: str = WEBHOOKS_JOB) -> str:
    return f'kubemta_webhook_reader_leader{{{job}, instance="{instance}"}}'


UNIT_TESTS: dict[str, Any] = {
    "evaluation_interval": "1m",
    "tests": [
        {
            "name": "TokenReview errors for 10 minutes fire; authenticated and refused tokens do not",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_tokenreviews_total{job="in", result="error"}', "values": "0x10 0+2x30"},
                {"series": 'kubemta_tokenreviews_total{job="in", result="refused"}', "values": "0+50x40"},
                {"series": 'kubemta_tokenreviews_total{job="in", result="authenticated"}', "values": "0+50x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "KubemtaTokenReviewErrors", "exp_alerts": []},
                {"eval_time": "18m", "alertname": "KubemtaTokenReviewErrors", "exp_alerts": []},
                {
                    "eval_time": "25m",
                    "alertname": "KubemtaTokenReviewErrors",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
        {
            "name": "TokenReview errors that stopped go quiet",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_tokenreviews_total{job="in", result="error"}', "values": "0+2x20 40x40"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "19m",
                    "alertname": "KubemtaTokenReviewErrors",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
                {"eval_time": "40m", "alertname": "KubemtaTokenReviewErrors", "exp_alerts": []},
            ],
        },
        {
            "name": "a sustained share of unavailable API answers fires",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_api_messages_total{job="in", result="unavailable"}', "values": "0+2x40"},
                {"series": 'kubemta_api_messages_total{job="in", result="queued"}', "values": "0+10x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "KubemtaApiUnavailable", "exp_alerts": []},
                {
                    "eval_time": "25m",
                    "alertname": "KubemtaApiUnavailable",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
            ],
        },
        {
            "name": "a few unavailable answers among many queued, or a single one, stay quiet",
            "interval": "1m",
            "input_series": [
                {"series": 'kubemta_api_messages_total{job="in", result="unavailable"}', "values": "0+1x40"},
                {"series": 'kubemta_api_messages_total{job="in", result="queued"}', "values": "0+100x40"},
                {"series": 'kubemta_api_messages_total{job="in2", result="unavailable"}', "values": "0x20 1x20"},
            ],
            "alert_rule_test": [{"eval_time": "40m", "alertname": "KubemtaApiUnavailable", "exp_alerts": []}],
        },
        {
            "name": "the webhooks reader lost for 5 minutes fires; a leader on another replica is fine",
            "interval": "1m",
            "input_series": [
                {"series": leader("w-0"), "values": "1x8 0x20"},
                {"series": leader("w-1"), "values": "0x20 1x8"},
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "KubemtaWebhooksNoReader", "exp_alerts": []},
                {
                    "eval_time": "16m",
                    "alertname": "KubemtaWebhooksNoReader",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                },
                {"eval_time": "24m", "alertname": "KubemtaWebhooksNoReader", "exp_alerts": []},
            ],
        },
        {
            "name": "no webhooks replica scraped at all fires too; another release's leader does not count",
            "interval": "1m",
            "input_series": [{"series": leader("w-9", job='job="other-webhooks-metrics"'), "values": "1x20"}],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "KubemtaWebhooksNoReader",
                    "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                }
            ],
        },
        {
            "name": "expired and failed webhooks fire per endpoint at once, gone and delivered do not",
            "interval": "1m",
            "input_series": [
                {"series": webhooks("shop", "expired"), "values": "0x10 1x30"},
                {"series": webhooks("crm", "failed"), "values": "0x5 3x30"},
                {"series": webhooks("audit", "gone"), "values": "0+5x40"},
                {"series": webhooks("audit", "delivered"), "values": "0+5x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "KubemtaWebhooksFailing", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "KubemtaWebhooksFailing",
                    "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "endpoint": "shop"}},
                        {"exp_labels": {"severity": "critical", "endpoint": "crm"}},
                    ],
                },
                {"eval_time": "35m", "alertname": "KubemtaWebhooksFailing", "exp_alerts": []},
            ],
        },
        {
            "name": "an endpoint whose POSTs are mostly retried for 15 minutes warns; a healthy one does not",
            "interval": "1m",
            "input_series": [
                {"series": webhooks("crm", "retried"), "values": "0+6x60"},
                {"series": webhooks("crm", "delivered"), "values": "0+1x60"},
                {"series": webhooks("shop", "retried"), "values": "0+1x60"},
                {"series": webhooks("shop", "delivered"), "values": "0+20x60"},
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "KubemtaWebhooksFailing", "exp_alerts": []},
                {
                    "eval_time": "40m",
                    "alertname": "KubemtaWebhooksFailing",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "endpoint": "crm"}}],
                },
            ],
        },
    ],
}


def without_annotations(rule: dict[str, Any]) -> dict[str, Any]:
    """A rendered rule as a rule file holds it, without annotations: promtool compares those exactly; they are
    checked above, the unit tests are about when alerts fire."""
    return {key: value for key, value in rule.items() if key not in ("annotations", "group")}


def test_promtool_unit_tests(tmp_path: Path) -> None:
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules(WEBHOOKS_ON):
        groups.setdefault(rule["group"], []).append(without_annotations(rule))
    rule_file = tmp_path / "kubemta-rules.yaml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": name, "rules": r} for name, r in groups.items()]}, sort_keys=False)
    )
    tests = tmp_path / "kubemta-rules.test.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [rule_file.name], **UNIT_TESTS}, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", tests.name], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests above can fail: the retry warning expected for the healthy endpoint is reported missing."""
    failing = [without_annotations(rule) for rule in rules(WEBHOOKS_ON) if rule["alert"] == "KubemtaWebhooksFailing"]
    rule_file = tmp_path / "rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "apps", "rules": failing}]}, sort_keys=False))
    (retry_test,) = [test for test in UNIT_TESTS["tests"] if test["name"].startswith("an endpoint whose POSTs")]
    wrong = json.loads(json.dumps(retry_test))
    wrong["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["endpoint"] = "shop"
    tests = tmp_path / "rules.test.yaml"
    tests.write_text(
        yaml.safe_dump({"rule_files": [rule_file.name], "evaluation_interval": "1m", "tests": [wrong]}, sort_keys=False)
    )
    result = subprocess.run(
        [promtool(), "test", "rules", tests.name], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode != 0 and "crm" in result.stdout + result.stderr
