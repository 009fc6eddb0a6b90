"""Unit tests of the benchmark's processes per stage, settling, warm-up and per-stage scale report (no timings)."""

import asyncio
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import kubemta_stack, report, scale_report, settle, throughput
from bench.config import kubemta_env, kubemta_env_text, load, processes
from bench.kubemta_stack import KubemtaStack
from bench.source import SourceResult
from bench.systems import SystemUnderTest


def test_processes_per_stage_are_parsed_and_the_ingress_variable_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BENCH_PROCESSES", "BENCH_INGRESS_PROCESSES", "BENCH_QUICK"):
        monkeypatch.delenv(name, raising=False)
    assert load([]).processes == {"ingress": 1, "queue-manager": 1, "dns-resolver": 1, "delivery-worker": 1}
    monkeypatch.setenv("BENCH_PROCESSES", "queue-manager=2,delivery-worker=3")
    config = load([])
    assert config.processes["queue-manager"] == 2 and config.processes["delivery-worker"] == 3
    assert config.count("dns-resolver") == 1
    monkeypatch.setenv("BENCH_INGRESS_PROCESSES", "2")
    assert load([]).processes["ingress"] == 2 and load([]).ingress_processes == 2
    assert load(["--processes", "ingress=4"]).ingress_processes == 4  # named in BENCH_PROCESSES: that wins


@pytest.mark.parametrize("text", ["tracker=2", "queue-manager=0", "queue-manager", "ingress=two"])
def test_a_wrong_processes_entry_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="BENCH_PROCESSES"):
        processes(text)


def test_quick_runs_get_smaller_stage_and_broker_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENCH_STAGE_MESSAGES", "BENCH_BROKER_MESSAGES", "BENCH_SETTLE_TIMEOUT", "BENCH_STAGE_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    quick, full = load(["--quick"]), load(["--no-quick"])
    assert quick.stage_messages < full.stage_messages and quick.broker_messages < full.broker_messages
    assert quick.settle_timeout < full.settle_timeout
    assert full.stage_processes == (1, 2)
    assert load(["--stage-processes", "2"]).stage_processes == (2,)


def test_more_kubemta_settings_are_parsed_named_in_titles_and_reach_every_service_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BENCH_KUBEMTA_ENV", raising=False)
    assert load([]).kubemta_env == {} and kubemta_env_text({}) == ""
    monkeypatch.setenv("BENCH_KUBEMTA_ENV", "KUBEMTA_CONSUMER_BATCH_WINDOW=0  KUBEMTA_AMQP_PREFETCH=64")
    config = load([])
    assert config.kubemta_env == {"KUBEMTA_CONSUMER_BATCH_WINDOW": "0", "KUBEMTA_AMQP_PREFETCH": "64"}
    assert kubemta_env_text(config.kubemta_env) == (
        ", settings KUBEMTA_CONSUMER_BATCH_WINDOW=0 KUBEMTA_AMQP_PREFETCH=64"
    )


@pytest.mark.parametrize("text", ["PATH=/tmp", "KUBEMTA_X", "=1", "KUBEMTA_=1", "KUBEMTA_A-B=1"])
def test_a_setting_that_is_not_kubemtas_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="BENCH_KUBEMTA_ENV"):
        kubemta_env(text)


class FakeProcess:
    """What KubemtaStack needs of a Popen: a pid, poll(), and the environment it was started with."""

    def __init__(self, pid: int, env: dict[str, str]) -> None:
        self.pid = pid
        self.env = env

    def poll(self) -> int | None:
        return None


async def test_the_stack_starts_as_many_processes_of_each_service_as_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[FakeProcess] = []

    def fake_spawn(argv: list[str], *, env: dict[str, str], log_path: Path) -> FakeProcess:
        started.append(FakeProcess(1000 + len(started), env))
        return started[-1]

    monkeypatch.setattr(kubemta_stack, "spawn", fake_spawn)
    monkeypatch.setattr(kubemta_stack, "_ready", lambda port: True)
    monkeypatch.setattr(kubemta_stack, "other_listeners", lambda service: ())
    stack = KubemtaStack(
        tmp_path,
        amqp_url="amqp://x",
        smtp_address="127.0.0.1",
        smtp_port=2525,
        transports="",
        log_level="INFO",
        processes={"ingress": 2, "queue-manager": 2, "delivery-worker": 3},
        extra_env={"KUBEMTA_CONSUMER_BATCH_WINDOW": "0", "KUBEMTA_LOG_LEVEL": "DEBUG"},
    )
    await stack.start(within=5)
    pids = stack.pids()
    assert {service: len(found) for service, found in pids.items()} == {
        "ingress": 2,
        "queue-manager": 2,
        "dns-resolver": 1,
        "delivery-worker": 3,
    }
    reuse = [process.env.get("KUBEMTA_SMTP_REUSE_PORT") for process in started]
    assert reuse[:2] == ["true", "true"] and set(reuse[2:]) == {None}
    assert len({process.env["KUBEMTA_METRICS_LISTEN"] for process in started}) == len(started)
    assert {process.env["KUBEMTA_CONSUMER_BATCH_WINDOW"] for process in started} == {"0"}
    assert {process.env["KUBEMTA_LOG_LEVEL"] for process in started} == {"DEBUG"}  # over the stack's own


def test_idle_fraction_comes_from_the_cpu_line_of_proc_stat() -> None:
    before = settle.cpu_times("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = settle.cpu_times("cpu  150 0 150 900 0 0 0 0 0 0\n")
    assert before == (800, 1000) and after == (900, 1200)
    assert settle.idle_between(before, after) == 0.5
    assert settle.idle_between(after, after) == 1.0


async def test_settling_waits_for_quiet_samples_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "SAMPLE_SECONDS", 0.0)
    readings = iter([(0, 0), (0, 100), (0, 100), (95, 200), (95, 200), (190, 300)])  # busy, then idle twice
    monkeypatch.setattr(settle, "cpu_times", lambda: next(readings))
    quiet = await settle.settle(60)
    assert quiet.quiet and quiet.idle_fraction == 0.95
    busy = itertools.cycle([(0, 0), (0, 100)])  # never idle
    monkeypatch.setattr(settle, "cpu_times", lambda: next(busy))
    loud = await settle.settle(0.01)
    assert not loud.quiet and loud.idle_fraction == 0.0
    assert (await settle.settle(0)).quiet  # 0: no wait at all


class FakeSink:
    """A sink that has received every message the source sent."""

    def __init__(self) -> None:
        self.count = 0

    def messages(self) -> int:
        return self.count


async def test_a_run_without_calibration_first_sends_a_discarded_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = FakeSink()
    sent: list[int] = []

    async def fake_source(config: Any, target: Any, workdir: Path, count: int, size: int) -> SourceResult:
        sent.append(count)
        sink.count += count
        return SourceResult(count, count, 0.1, 0.0, 0, "")

    monkeypatch.setattr(throughput, "_source", fake_source)
    config = load(["--sessions", "7"])
    target = SystemUnderTest("kubemta", "127.0.0.1", 25)
    assert await throughput.warm_up(config, target, sink, tmp_path, 1024) == 70  # type: ignore[arg-type]
    assert sent == [throughput.WARM_UP_PER_SESSION * 7]


def test_pods_for_a_million_an_hour_have_headroom() -> None:
    assert scale_report.pods(417) == 1  # 278 x 1.5 = 417
    assert scale_report.pods(416) == 2
    assert scale_report.pods(100) == 5
    assert scale_report.pods(0) is None
    assert scale_report.broker_node_rate(4000, 4000) == 500.0  # 4 hops x (0.25 + 0.25) ms = 2 ms
    assert scale_report.broker_node_rate(0, 4000) is None


def _stage(stage: str, processes: int, rate: float, cpu: float = 1.0, broker: float = 0.5) -> dict[str, Any]:
    return {
        "stage": stage,
        "processes": processes,
        "rate": rate,
        "rate_per_process": rate / processes,
        "cpu_ms_per_message": cpu,
        "broker_ms_per_message": broker,
        "settled": {"quiet": processes == 1},
        "error": None,
    }


def test_the_scale_report_has_every_stage_the_broker_and_the_pods() -> None:
    stages = [_stage(name, 1, 300.0) for name in scale_report.ORDER]
    stages += [_stage("queue-manager", 2, 500.0), dict(_stage("ingress", 2, 0.0), error="smtp-source 1: refused")]
    stages.append(dict(_stage("ingress", 1, 400.0, cpu=0.75, broker=0.25), variant="route answers fresh"))
    document = {
        "title": "t",
        "stages": list(reversed(stages)),
        "broker": [
            {"phase": "publish", "messages": 10, "rate": 4000.0, "broker_ms_per_message": 0.1,
             "client_ms_per_message": 0.2, "clients": 4, "settled": None, "error": None},
            {"phase": "consume", "messages": 10, "rate": 4000.0, "broker_ms_per_message": 0.1,
             "client_ms_per_message": 0.2, "clients": 4, "settled": None, "error": None},
        ],
    }  # fmt: skip
    text = scale_report.render(document, markdown=True)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "processes" not in line]
    assert rows[0] == "| ingress | 1 | 300 | 300 | 1.00 | 0.50 | 2 |"
    assert rows[1].startswith("| ingress | 2 | failed: smtp-source 1: refused")
    assert "| queue-manager | 2 | 500 | 250 | 1.00 | 0.50 | 1 |" in rows
    assert "| publish | 10 | 4000 | 0.10 | 0.20 | 4 |" in text
    assert "a message crossing 4 queues: about 500 msg/s" in text
    assert "crosses 1 queue (`deliver`): about 2000 msg/s" in text
    assert "| ingress (route answers fresh) | 1 | 400 | 400 | 0.75 | 0.25 | 2 |" in rows
    short_path = "short path (ingress with the route answers fresh, then the worker): 1.75 CPU ms per message"
    assert short_path + " and the broker 0.75" in text
    assert "(publish + consume): 0.20 ms, so 1250 msg/s per broker core at 4 queues" in text
    assert "1 process(es) per stage: the four stages use 4.00 CPU ms per message and the broker 2.00" in text
    assert "2 process(es) per stage" not in text  # not every stage measured with 2
    assert "2 measurement(s) started on a busy machine" in text
    assert "| stage |" not in scale_report.render(document, markdown=False)


def test_the_broker_client_refuses_a_wrong_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.broker_limit", "worker", "both"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "usage" in result.stderr


def test_settle_sample_reads_this_machine() -> None:
    idle, total = settle.cpu_times()
    assert 0 <= idle <= total
    assert asyncio.iscoroutinefunction(settle.settle)


def _delivered(rate: float, repetition: int, quiet: bool) -> throughput.RunResult:
    run = throughput.failed_run("kubemta", 1024, repetition, "")
    run.error = None
    run.delivered_rate = rate
    run.accepted_rate = rate
    run.settled = {"quiet": quiet}
    return run


def test_the_report_gives_the_spread_between_runs_and_the_runs_started_busy() -> None:
    runs = [_delivered(300.0, 1, True), _delivered(270.0, 2, False), _delivered(330.0, 3, True)]
    summary = report.summarise(runs)
    assert summary["1024/kubemta"]["spread_pct"] == {"accepted_rate": 20.0, "delivered_rate": 20.0}
    assert summary["1024/kubemta"]["started_busy"] == 1
    text = report.table(summary, {}, [], sizes=[1024], systems=["kubemta"], title="t")
    assert "kubemta 1 KiB: delivered msg/s spread 20% (1 run(s) started with busy CPUs)" in text
    assert report.spread_pct(report.summarise(runs[:1])["1024/kubemta"]["delivered_rate"]) is None
