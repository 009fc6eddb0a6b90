"""The monitoring pack against a real Prometheus (Debian `prometheus`) scraping the four services,
the webhooks component and the tracker (the oldest queued message's age) during an end-to-end
run: every dashboard query and every alert expression (the webhooks' alerts included) is
evaluated through Prometheus' HTTP API; each must parse, and each kubemta panel query must
return data.

RabbitMQ's queue metrics (rabbitmq_queue_*) come from the broker's own rabbitmq_prometheus
plugin, which the shared test broker does not run (and tests must not enable): those queries
are only proven to parse here, as are the few panels in TRAFFIC_NOT_MADE, whose series only
exist after traffic this run does not make.
"""

import asyncio
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.chart.render import CHART, render
from tests.e2e.conftest import dns_server, make_message, mta, send, world  # noqa: F401 - fixtures
from tests.harness.ports import free_port
from tests.harness.processes import spawn, stop, wait_until
from tests.harness.stack import Stack
from tests.harness.tools import prometheus as prometheus_binary

pytestmark = [
    pytest.mark.broker,
    pytest.mark.e2e,
    pytest.mark.timeout(240),
]

RELEASE = "kubemta"
# scrape job names as a ServiceMonitor produces them: the Service's name
JOBS = {
    "ingress": f"{RELEASE}-smtp-ingress-metrics",
    "queue-manager": f"{RELEASE}-queue-manager-metrics",
    "dns-resolver": f"{RELEASE}-dns-resolver-metrics",
    "delivery-worker": f"{RELEASE}-delivery-worker-metrics",
    "webhooks": f"{RELEASE}-webhooks-metrics",
    "tracker": f"{RELEASE}-tracker-metrics",
}
RULE_VALUES = {"metrics": {"prometheusRule": {"enabled": True}}, "webhooks": {"enabled": True}}
# Grafana's variables, as the dashboard would expand them
SUBSTITUTIONS = {"$__rate_interval": "1m", "$namespace": ".*", "$vhost": ".*"}
SENDER = "alice@sender.e2e.test"
# panel -> the traffic its series need (counters without pre-initialised labels): evaluated, parse only
TRAFFIC_NOT_MADE = {
    "SMTP connections refused before the greeting": "connections over a limit or a broken PROXY header",
    "Inbound TLS handshakes by result": "clients using STARTTLS or port 465",
}


def http_json(url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    return body


class Prometheus:
    def __init__(self, base_url: str, rules_path: Path) -> None:
        self.base_url = base_url
        self.rules_path = rules_path

    def query(self, expr: str) -> dict[str, Any]:
        return http_json(self.base_url + "/api/v1/query", {"query": expr})

    def targets_up(self) -> bool:
        result = self.query("up")
        return (
            result.get("status") == "success"
            and len(result["data"]["result"]) == len(JOBS)
            and all(sample["value"][1] == "1" for sample in result["data"]["result"])
        )


def rule_file(directory: Path) -> Path:
    (rule,) = [doc for doc in render(RULE_VALUES) if doc["kind"] == "PrometheusRule"]
    path = directory / "kubemta-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression with Grafana's variables expanded) for every panel query."""
    dashboard = json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in SUBSTITUTIONS.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unexpanded variable in {panel['title']}: {expr}"
            found.append((panel["title"], expr))
    return found


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    processes = []

    def start(stack: Stack) -> Prometheus:
        port = free_port()
        rules_path = rule_file(tmp_path)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(rules_path)],
            "scrape_configs": [
                {
                    "job_name": JOBS[name],
                    "static_configs": [{"targets": [f"127.0.0.1:{service.metrics_port}"]}],
                }
                for name, service in stack.services.items()
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        check = subprocess.run(
            [shutil.which("promtool") or "promtool", "check", "config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        process = spawn(
            [
                prometheus_binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            log_path=tmp_path / "prometheus.log",
            cwd=tmp_path,
        )
        processes.append(process)
        prometheus = Prometheus(f"http://127.0.0.1:{port}", rules_path)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "prometheus.log").read_text())
            try:
                with urllib.request.urlopen(prometheus.base_url + "/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, timeout=30, what="prometheus ready")
        return prometheus

    yield start
    for process in processes:
        stop(process, grace=10)


async def test_dashboard_and_alert_queries_against_live_services(
    mta: tuple[Stack, str],  # noqa: F811 - the imported fixture
    world: Any,  # noqa: F811
    prometheus_factory: Any,
    tmp_path: Path,
) -> None:
    stack, server = mta
    # the webhooks component with one endpoint (no mail here matches it): its metrics series exist
    endpoints = tmp_path / "webhooks.json"
    endpoint = {"name": "shop", "url": f"http://127.0.0.1:{free_port()}/hooks", "secret": "s" * 32}
    endpoints.write_text(json.dumps([{**endpoint, "submitters": ["apikey:shop"], "events": ["delivered"]}]))
    # the tracker, for the oldest open message's arrival (ready once its index caught up: the gauge is set then)
    tracker = {"KUBEMTA_TRACKER_LISTEN": f"127.0.0.1:{free_port()}", "KUBEMTA_INDEX_PATH": str(tmp_path / "index")}
    await stack.start(
        ("webhooks", "tracker"),
        extra_env={"webhooks": {"KUBEMTA_WEBHOOKS_FILE": str(endpoints)}, "tracker": tracker},
    )
    peers = [world.peer("mx1"), world.peer("mx2"), world.peer("bounce-mx")]
    peers.append(world.peer("mx3", rules={"later": "451 4.7.1 Greylisted, try again later"}))
    for peer in peers:
        await peer.start()
    prometheus = await asyncio.to_thread(prometheus_factory, stack)
    await asyncio.to_thread(wait_until, prometheus.targets_up, timeout=30, what="all six targets up")
    await asyncio.to_thread(
        wait_until,
        lambda: prometheus.query("sum(kubemta_webhook_reader_leader) == 1")["data"]["result"] != [],
        timeout=30,
        what="one webhooks replica reads the events stream",
    )

    # mail that is delivered, bounced (null MX), deferred (greylisted) and refused (bare LF)
    for n in range(3):
        await send(server, SENDER, [f"bob{n}@mx.e2e.test"], make_message(SENDER, [f"bob{n}@mx.e2e.test"], f"m{n}"))
    await send(server, SENDER, ["frank@nullmx.e2e.test"], make_message(SENDER, ["frank@nullmx.e2e.test"], "nullmx"))
    await send(server, SENDER, ["later@other.e2e.test"], make_message(SENDER, ["later@other.e2e.test"], "greylist"))
    await send(server, SENDER, ["bob@mx.e2e.test"], b"Subject: bare\nbare line feed\n")

    def counted(expr: str, at_least: float) -> bool:
        result = prometheus.query(expr)
        samples = result["data"]["result"] if result.get("status") == "success" else []
        return bool(samples) and float(samples[0]["value"][1]) >= at_least

    for expr, at_least in (
        ("sum(kubemta_recipients_delivered_total)", 3),
        ("sum(kubemta_recipients_bounced_total)", 1),
        ("sum(kubemta_recipients_deferred_total)", 1),
        ("sum(kubemta_bounces_sent_total)", 1),
        ('sum(kubemta_messages_rejected_total{reason="bad_line_ending"})', 1),
        ("sum(kubemta_delivery_duration_seconds_count)", 4),
    ):

        def reached(expr: str = expr, at_least: float = at_least) -> bool:
            return counted(expr, at_least)

        await asyncio.to_thread(wait_until, reached, timeout=60, what=expr)
    await asyncio.sleep(3)  # a few more scrapes, so 1m rates span the traffic

    problems = []
    for title, expr in dashboard_targets():
        result = prometheus.query(expr)
        if result.get("status") != "success":
            problems.append(f"{title}: {expr}: {result.get('error')}")
        elif "rabbitmq_" in expr or title in TRAFFIC_NOT_MADE:
            continue  # rabbitmq_prometheus plugin metrics (not on the shared broker), or traffic not made: parse only
        elif not result["data"]["result"]:
            problems.append(f"{title}: {expr}: no data")
    assert not problems, "\n".join(problems)
    assert set(TRAFFIC_NOT_MADE) <= {title for title, _ in dashboard_targets()}

    # the classes of the bounce (null MX) and of the deferral (greylisting) are labels of their counters
    for expr in (
        'sum by (class) (kubemta_recipients_bounced_total{class!=""}) >= 1',
        'sum by (class) (kubemta_recipients_deferred_total{class!=""}) >= 1',
    ):
        assert prometheus.query(expr)["data"]["result"], expr

    throughput = prometheus.query('sum(rate(kubemta_messages_received_total{namespace=~".*"}[1m]))')
    assert float(throughput["data"]["result"][0]["value"][1]) > 0

    rules = yaml.safe_load(prometheus.rules_path.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            result = prometheus.query(rule["expr"])
            assert result.get("status") == "success", f"{rule['alert']}: {result.get('error')}"

    # Prometheus itself loaded and evaluated every rule without error
    deadline = time.monotonic() + 10
    while True:
        loaded = http_json(prometheus.base_url + "/api/v1/rules")["data"]["groups"]
        rules_state = [rule for group in loaded for rule in group["rules"]]
        if all(rule.get("health") == "ok" for rule in rules_state) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(rules_state) == sum(len(group["rules"]) for group in rules["groups"])
    assert [r["name"] for r in rules_state if r.get("health") != "ok"] == []
