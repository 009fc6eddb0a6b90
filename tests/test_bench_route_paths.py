"""`make bench` says which path each kubemta run's messages took: the share of first attempts the ingress sent
straight to `deliver`, from the services' own `kubemta_route_answers_total`, read before and after the run. A run
that went through `inbound` costs more; the report shows it and why, instead of leaving a slow run unexplained."""

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest, start_http_server

from bench import route_paths
from bench.markdown import render
from bench.report import method_lines, summarise
from bench.throughput import failed_run
from tests.harness.bench_documents import result_document
from tests.harness.ports import free_port


def registry_with(**counts: float) -> CollectorRegistry:
    """A registry holding `kubemta_route_answers_total` with these results (and another counter beside it)."""
    registry = CollectorRegistry()
    answers = Counter("kubemta_route_answers", "route answers", ["result"], registry=registry)
    for result, value in counts.items():
        answers.labels(result=result).inc(value)
    Counter("kubemta_messages_accepted", "other", registry=registry).inc(7)
    return registry


@pytest.fixture
def metrics_servers() -> Iterator[list[tuple[int, CollectorRegistry]]]:
    """Three /metrics servers on loopback (two ingress processes and a queue-manager), stopped after the test."""
    servers = []
    registries = [registry_with(used=90, missing=10), registry_with(used=5), registry_with(used=40, stale=2)]
    try:
        for registry in registries:
            port = free_port("127.0.0.1")
            server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
            servers.append((server, thread, port, registry))
        yield [(port, registry) for _, _, port, registry in servers]
    finally:
        for server, thread, _, _ in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def test_a_metrics_page_gives_the_counts_by_result() -> None:
    page = generate_latest(registry_with(used=3, missing=1, waiting=2)).decode()
    assert route_paths.parse(page) == {"used": 3, "missing": 1, "waiting": 2}
    assert route_paths.parse("# nothing here\n") == {}


def test_the_processes_of_a_service_are_summed_and_a_silent_one_counts_nothing(
    metrics_servers: list[tuple[int, CollectorRegistry]],
) -> None:
    (first, _), (second, _), (manager, _) = metrics_servers
    silent = free_port("127.0.0.1")  # nothing listens there
    counts = route_paths.scrape({"ingress": [first, second, silent], "queue-manager": [manager], "dns-resolver": [1]})
    assert counts == {"ingress": {"used": 95, "missing": 10}, "queue-manager": {"used": 40, "stale": 2}}


def test_a_run_is_the_difference_between_two_scrapes() -> None:
    before: route_paths.Counts = {"ingress": {"used": 95, "missing": 10}}
    after: route_paths.Counts = {"ingress": {"used": 1095, "missing": 10, "waiting": 4}, "queue-manager": {"used": 3}}
    run = route_paths.difference(after, before)
    assert run == {"ingress": {"used": 1000, "missing": 0, "waiting": 4}, "queue-manager": {"used": 3}}
    assert route_paths.run_text(run) == "99.6% (waiting 4)"


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ({"ingress": {"used": 12000, "missing": 0, "stale": 0}}, "100.0%"),
        ({"ingress": {"used": 5190, "missing": 6810}}, "43.2% (missing 6,810)"),
        ({"ingress": {"used": 0, "waiting": 12000}}, "0.0% (waiting 12,000)"),
        ({"ingress": {}}, "–"),  # the ingress looked nothing up (KUBEMTA_ROUTE_SHORTCUT=false)
        ({}, "–"),
    ],
)
def test_each_run_reads_as_its_share_sent_straight_to_deliver_and_why_not(
    counts: dict[str, dict[str, float]], text: str
) -> None:
    assert route_paths.run_text(counts) == text


def test_the_report_lists_every_kubemta_run_in_order() -> None:
    runs = []
    counted = [{"used": 12000.0}, {"used": 5190.0, "missing": 6810.0}, {"used": 11990.0, "missing": 10.0}]
    for repetition, counts in enumerate(counted, 1):
        run = failed_run("kubemta", 10240, repetition, "")
        run.error, run.route_answers = None, {"ingress": counts}
        runs.append(run)
    postfix = failed_run("postfix", 10240, 1, "")
    document = result_document(summarise([*runs, postfix]), sizes=[10240], systems=["kubemta", "postfix"])
    document["runs"] = [run.to_json() for run in [*runs, postfix]]
    text = render(document)
    assert "per run: kubemta 10 KiB: 100.0%, 43.2% (missing 6,810), 99.9% (missing 10)." in text


def test_a_result_file_from_before_the_counts_were_read_renders_without_the_line() -> None:
    run = failed_run("kubemta", 1024, 1, "")
    run.error = None
    document = result_document(summarise([run]), sizes=[1024], systems=["kubemta"])
    document["runs"] = [{key: value for key, value in run.to_json().items() if key != "route_answers"}]
    assert "straight to `deliver`" not in render(document)
    del document["runs"]
    assert "straight to `deliver`" not in render(document)


def test_the_method_describes_the_figure_with_the_counter_named() -> None:
    lines = method_lines(
        sessions=20,
        mode="one message per connection",
        duration=20,
        repetitions=3,
        probe_sessions=2,
        probe_rate=10,
        sources=4,
    )
    assert any("kubemta_route_answers_total{result}" in line for line in lines)
    assert any("20 parallel sessions" in line for line in lines)
