"""Which path a kubemta run's messages took, from the services' `kubemta_route_answers_total{result}`.

A message the ingress sends straight to `deliver` (its domain's route answer fresh: docs/architecture.md, "Direct
jobs") costs a quorum queue and the queue-manager less than one sent through `inbound`, so a run whose messages went
the long path measures a dearer kubemta. The counter is read from every ingress and queue-manager process'
/metrics before and after each run; the difference is the run's. `used` is a first attempt sent straight to
`deliver`; `missing`, `stale`, `waiting` and `decided` say why one was not (kubemta_common.route_shortcut).
"""

import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

FAMILY = "kubemta_route_answers"
"""`kubemta_route_answers_total` as the parser names its family."""
SERVICES = ("ingress", "queue-manager")
"""The services that look first attempts up (the ingress for its direct jobs, the queue-manager for the rest)."""
SCRAPE_TIMEOUT = 5.0

type Counts = dict[str, dict[str, float]]
"""Service -> result -> first attempts (summed over the service's processes)."""


def parse(text: str) -> dict[str, float]:
    """Result -> count, from one /metrics page (nothing when the counter is absent)."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != FAMILY:
            continue
        for sample in family.samples:
            if sample.name == f"{FAMILY}_total" and "result" in sample.labels:
                result = sample.labels["result"]
                counts[result] = counts.get(result, 0.0) + sample.value
    return counts


def scrape(ports: dict[str, list[int]]) -> Counts:
    """The counts of every process of SERVICES, by the metrics ports `ports` (service -> ports); a process that does
    not answer counts nothing (the run's figures stay; this is only their explanation)."""
    counts: Counts = {}
    for service in SERVICES:
        for port in ports.get(service, []):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT) as response:
                    page = response.read().decode("utf-8", "replace")
            except (urllib.error.URLError, OSError):
                continue
            totals = counts.setdefault(service, {})
            for result, value in parse(page).items():
                totals[result] = totals.get(result, 0.0) + value
    return counts


def difference(after: Counts, before: Counts) -> Counts:
    """What was counted between two scrapes."""
    return {
        service: {result: value - before.get(service, {}).get(result, 0.0) for result, value in results.items()}
        for service, results in after.items()
    }


def direct_share(counts: dict[str, Any]) -> float | None:
    """The share of the ingress' first attempts sent straight to `deliver`; None when it looked none up."""
    ingress = counts.get("ingress", {})
    looked_up = sum(ingress.values())
    return ingress.get("used", 0.0) / looked_up if looked_up else None


def run_text(counts: dict[str, Any]) -> str:
    """One run: "100.0%", or "43.2% (missing 6,810, waiting 12)" naming why the others went to `inbound`."""
    share = direct_share(counts)
    if share is None:
        return "–"
    text = f"{share:.1%}"
    others = [
        f"{result} {value:,.0f}"
        for result, value in counts.get("ingress", {}).items()
        if result != "used" and value >= 1
    ]
    return f"{text} ({', '.join(others)})" if others else text
