"""The overview dashboard's shape and names: the top row of single numbers, bounces and deferrals by class and
provider, a panel for every metric the services measure (or a reason it has none), and every metric and label
value a panel or an alert names checked against the services' own metric objects.

test_monitoring_e2e.py evaluates the same queries against a real Prometheus scraping the running services.
"""

import json
import re
from typing import Any

from prometheus_client import REGISTRY

# every service's metrics, registered as their /metrics shows them
import kubemta_delivery_worker.metrics  # noqa: F401
import kubemta_dns_resolver.metrics  # noqa: F401
import kubemta_ingress.__main__  # noqa: F401
import kubemta_queue_manager.metrics  # noqa: F401
import kubemta_tracker.metrics  # noqa: F401
import kubemta_webhooks.metrics  # noqa: F401
from kubemta_common.bounce_class import BounceClass
from tests.chart.render import CHART
from tests.chart.test_alerts import every_rule
from tests.chart.test_chart_apps_monitoring import code_samples, unknown_names

DASHBOARD = json.loads((CHART / "dashboards" / "kubemta-overview.json").read_text())
PANELS: list[dict[str, Any]] = DASHBOARD["panels"]
CLASS_LABELLED = ("kubemta_recipients_bounced_total", "kubemta_recipients_deferred_total")
NOT_ON_THE_DASHBOARD = {
    # a service-level gauge per process: KubemtaServiceDisconnectedFromBroker alerts on it
    "kubemta_broker_connected": "an alert",
    # rarely moving signals, not shown yet
    "kubemta_tls_certificate_reloads": "rare",
    "kubemta_recipient_verifications": "rare",
    "kubemta_recipient_probes": "rare",
    "kubemta_recipient_probe_cache_hits": "rare",
    "kubemta_domain_checks": "rare",
    # shown by another panel's numbers
    "kubemta_messages_split": "jobs created",
    "kubemta_webhook_events_matched": "webhook deliveries",
    # efficiency, not health: how many first attempts skipped the route hop (docs/architecture.md, Route answers)
    "kubemta_route_answers": "efficiency",
    "kubemta_route_answers_published": "efficiency",
}
"""Metrics deliberately not on the dashboard, with the reason; the tracker's own (kubemta_tracker_*) are not either
(it is an optional component, and kubemta-admin asks it directly), but for the oldest open message's arrival
behind the top row's "Oldest queued message"."""


def row(title: str) -> list[dict[str, Any]]:
    """The panels of the row `title`: after its row panel, up to the next row."""
    (start,) = [n for n, panel in enumerate(PANELS) if panel["type"] == "row" and panel["title"] == title]
    found = []
    for panel in PANELS[start + 1 :]:
        if panel["type"] == "row":
            break
        found.append(panel)
    return found


def exprs(panels: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {panel["title"]: [target["expr"] for target in panel.get("targets", [])] for panel in panels}


def test_the_top_row_is_single_numbers() -> None:
    assert PANELS[0] == {**PANELS[0], "type": "row", "title": "At a glance"}
    top = row("At a glance")
    assert [panel["title"] for panel in top] == [
        "Delivered",
        "Bounce rate",
        "Deferral rate",
        "Oldest queued message",
        "Queue time p90 (finished mail)",
        "Held messages",
        "Active SMTP sessions",
    ]
    assert {panel["type"] for panel in top} == {"stat"}
    assert all(len(panel["targets"]) == 1 and panel["gridPos"]["y"] == 1 for panel in top)
    assert sum(panel["gridPos"]["w"] for panel in top) == 24
    units = {panel["title"]: panel["fieldConfig"]["defaults"]["unit"] for panel in top}
    assert units["Bounce rate"] == units["Deferral rate"] == "percentunit" and units["Delivered"] == "ops"
    assert units["Oldest queued message"] == units["Queue time p90 (finished mail)"] == "s"
    # the tracker exports the oldest open message's arrival (a timestamp): the age is computed here, the oldest
    # across replicas; the queue time beside it is that of finished mail
    found = exprs(top)
    assert found["Oldest queued message"] == [
        'time() - min(kubemta_tracker_oldest_open_message_timestamp_seconds{namespace=~"$namespace"})'
    ]
    assert "not the age of the oldest message still queued" in top[4]["description"]


def test_bounces_and_deferrals_by_class_and_provider() -> None:
    found = exprs(row("Bounces and deferrals by class and provider"))
    joined = " ".join(expr for queries in found.values() for expr in queries)
    for metric in CLASS_LABELLED:
        for by in ("class", "provider, class"):
            assert f"sum by ({by}) (rate({metric}{{" in joined, (metric, by)
    assert 'sum by (provider) (rate(kubemta_recipients_bounced_total{namespace=~"$namespace"}' in joined
    (share,) = found["Bounce rate by class"]
    assert "/ on() group_left() clamp_min(" in share


def test_the_new_panels_show_what_is_measured() -> None:
    """Outbound TLS, DKIM signatures, AUTH attempts, held jobs, destination back-offs, active sessions."""
    joined = json.dumps(exprs(PANELS))
    for metric in (
        "kubemta_tls_outbound_total",
        "kubemta_dkim_signatures_total",
        "kubemta_auth_attempts_total",
        "kubemta_jobs_held_total",
        "kubemta_destination_backoffs_total",
        "kubemta_destination_deferrals_total",
        "kubemta_smtp_sessions_active",
    ):
        assert metric in joined, metric


def test_every_metric_the_services_measure_is_shown_or_has_a_reason() -> None:
    text = json.dumps(exprs(PANELS))
    missing = []
    for family in REGISTRY.collect():
        if not family.name.startswith("kubemta_") or family.name.startswith("kubemta_tracker_"):
            continue
        if family.name in NOT_ON_THE_DASHBOARD:
            continue
        names = {sample.name for sample in family.samples if not sample.name.endswith("_created")}
        names = names or {family.name + ("_total" if family.type == "counter" else "")}  # labelled, no series yet
        if not any(re.search(rf"\b{name}\b", text) for name in names):
            missing.append(family.name)
    assert missing == []
    assert "kubemta_webhook_events_matched" in {family.name for family in REGISTRY.collect()}


def services_samples() -> dict[str, dict[str, set[str]]]:
    """code_samples(), with the labelled gauges whose series a running service creates (no label value known)."""
    samples = code_samples()
    for family in REGISTRY.collect():
        if family.name.startswith("kubemta_") and family.type == "gauge":
            samples.setdefault(family.name, {})
    return samples


def test_every_metric_and_label_value_named_is_the_services() -> None:
    samples = services_samples()
    for metric in CLASS_LABELLED:  # the class is a bounded enum: its values are BounceClass', series or not
        samples[metric] = {**samples[metric], "class": {value.value for value in BounceClass}}
    found = [(title, expr) for title, queries in exprs(PANELS).items() for expr in queries]
    found += [(rule["alert"], rule["expr"]) for rule in every_rule()]
    problems = [problem for where, expr in found for problem in unknown_names(where, expr, samples)]
    assert not problems, "\n".join(problems)


def test_the_class_check_catches_a_wrong_class() -> None:
    samples = services_samples()
    samples["kubemta_recipients_bounced_total"]["class"] = {value.value for value in BounceClass}
    (problem,) = unknown_names("panel", 'kubemta_recipients_bounced_total{class="user_unknown"}', samples)
    assert "user_unknown" in problem


def test_layout_ids_and_descriptions() -> None:
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in PANELS:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
    new_rows = (
        "At a glance",
        "Bounces and deferrals by class and provider",
        "Delivery: outbound TLS, back-offs, held jobs",
        "SMTP ingress: sessions, TLS, DKIM signing",
    )
    for title in new_rows:
        for panel in row(title):
            assert panel["description"], panel["title"]
            assert all('namespace=~"$namespace"' in t["expr"] or "rabbitmq_" in t["expr"] for t in panel["targets"])
