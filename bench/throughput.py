"""One throughput run: smtp-source (+ the latency probe) -> system under test -> smtp-sink.

Figures of a run:
- accepted msg/s: smtp-source's accepted count / its wall time (start to exit).
- delivered msg/s: smtp-source's messages the sink received (its dumps, probe messages left
  out) / time from smtp-source's start to the last of them arriving (the newest dump file's
  mtime), so a backlog the system still delivers after smtp-source ended counts against it.
- accept latency p50/p99: the probe's end-of-DATA -> 250 times (see bench.latency_probe).
- end-to-end latency p50/p99: a probe message's arrival at the sink (its dump file's
  mtime) minus the time its 250 was received.
- CPU seconds per 1,000 messages: utime+stime of each process tree (and of RabbitMQ's
  beam.smp) from smtp-source's start until the sink has every message, per 1,000
  messages delivered (the probe's included: the system did that work too).
- peak RSS: VmHWM of each service's processes at the end of the run.

kubemta-api's load is bench.api_source instead of smtp-source, with the same count and
concurrency, and no SMTP probe: its accept latency is every request's request -> 202 time,
its end-to-end latency that of the API source's own probe messages, and the CPU the
source (this Python process) used is kept apart (`source_cpu_per_1000`), as smtp-source's
is not counted either.
"""

import asyncio
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import route_paths
from bench.api_source import ApiEndpoint, ApiSourceResult, run_api_source
from bench.config import BenchConfig
from bench.latency_probe import LatencyProbe, ProbeReport
from bench.procstats import cpu_seconds, sum_status_kib
from bench.sink import DumpScan, Sink
from bench.source import SourceResult, run_source
from bench.stats import percentile
from bench.systems import SystemUnderTest

WARM_UP_PER_SESSION = 10  # a discarded warm-up of this many messages per session before a run not calibrated
CALIBRATION_MARGIN = 1.25  # measured count = pilot rate x duration x margin
MAX_RERUNS = 2  # a run shorter than the target duration is repeated with a larger count, this often at most


@dataclass
class RunResult:
    """The figures of one run (see the module docstring)."""

    system: str
    size: int
    repetition: int
    requested: int
    accepted: int
    source_seconds: float
    accepted_rate: float
    delivered: int  # every message the sink counted (smtp-sink -c), the probe's included
    delivered_load: int  # smtp-source's messages among them (from the dumps)
    delivery_seconds: float | None
    delivered_rate: float | None
    drained: bool
    probe_messages: int
    probe_errors: int
    probe_lost: int
    accept_p50_ms: float | None
    accept_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_per_1000: dict[str, float] = field(default_factory=dict)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    short_runs_repeated: int = 0
    error: str | None = None
    probe_error_examples: list[str] = field(default_factory=list)
    accept_ms: list[float] = field(default_factory=list)  # every probe sample, for pooled percentiles
    e2e_ms: list[float] = field(default_factory=list)
    source_cpu_per_1000: float | None = None  # kubemta-api: the API source's own CPU (this process)
    settled: dict[str, Any] | None = None  # bench.settle: how quiet the machine was before the run
    route_answers: dict[str, dict[str, float]] = field(default_factory=dict)  # kubemta: bench.route_paths

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def failed_run(system: str, size: int, repetition: int, error: str) -> RunResult:
    """The result of a run that could not be measured."""
    return RunResult(
        system=system,
        size=size,
        repetition=repetition,
        requested=0,
        accepted=0,
        source_seconds=0.0,
        accepted_rate=0.0,
        delivered=0,
        delivered_load=0,
        delivery_seconds=None,
        delivered_rate=None,
        drained=False,
        probe_messages=0,
        probe_errors=0,
        probe_lost=0,
        accept_p50_ms=None,
        accept_p99_ms=None,
        e2e_p50_ms=None,
        e2e_p99_ms=None,
        error=error,
    )


async def wait_for_sink(sink: Sink, count: int, *, within: float, target: SystemUnderTest) -> bool:
    """Poll until the sink has received `count` messages; False after `within` seconds."""
    deadline = time.monotonic() + within
    while sink.messages() < count:
        target.check()
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _drain_bound(config: BenchConfig, source: SourceResult) -> float:
    return max(config.drain_timeout, 4 * source.wall_seconds)


async def _api_source(
    config: BenchConfig, endpoint: ApiEndpoint, count: int, size: int, *, probes: bool
) -> ApiSourceResult:
    return await run_api_source(
        endpoint,
        count=count,
        size=size,
        sessions=config.sessions,
        probe_rate=config.probe_rate if probes and config.probe_sessions > 0 else 0.0,
        run_id=uuid.uuid4().hex[:12],
    )


async def _source(config: BenchConfig, target: SystemUnderTest, workdir: Path, count: int, size: int) -> SourceResult:
    if target.api is not None:
        return (await _api_source(config, target.api, count, size, probes=False)).source
    return await run_source(
        target.address,
        target.port,
        count=count,
        size=size,
        sessions=config.sessions,
        keep_sessions=config.keep_sessions,
        log_path=workdir / "smtp-source.out",
    )


async def calibrate(config: BenchConfig, target: SystemUnderTest, sink: Sink, workdir: Path, size: int) -> int:
    """A pilot of growing counts until smtp-source runs a few seconds; the count for `config.duration`."""
    pilot_seconds = min(3.0, config.duration / 2)
    count = max(100, 10 * config.sessions)
    for _ in range(6):
        before = sink.messages()
        pilot = await _source(config, target, workdir, count, size)
        if pilot.returncode != 0 or pilot.accepted == 0:
            raise RuntimeError(f"{pilot.tool} pilot failed ({pilot.returncode}): {pilot.output_tail}")
        await wait_for_sink(sink, before + pilot.accepted, within=_drain_bound(config, pilot), target=target)
        if pilot.wall_seconds >= pilot_seconds:
            break
        count = int(count * min(20.0, max(2.0, 1.5 * pilot_seconds / max(pilot.wall_seconds, 0.01))))
    return math.ceil(pilot.rate * config.duration * CALIBRATION_MARGIN)


async def warm_up(config: BenchConfig, target: SystemUnderTest, sink: Sink, workdir: Path, size: int) -> int:
    """A short discarded load, delivered before the measured run, as calibration is in the first repetition: every
    repetition then measures processes whose connections, pools and caches are warm. Returns the messages sent."""
    before = sink.messages()
    count = WARM_UP_PER_SESSION * config.sessions
    source = await _source(config, target, workdir, count, size)
    if source.returncode != 0 or source.accepted == 0:
        raise RuntimeError(f"{source.tool} warm-up failed ({source.returncode}): {source.output_tail}")
    await wait_for_sink(sink, before + source.accepted, within=_drain_bound(config, source), target=target)
    return source.accepted


def _probe_latencies(report: ProbeReport, dumps: DumpScan, system: str) -> tuple[list[float], list[float], int]:
    """Accept latencies and end-to-end latencies (seconds) of the probe messages; and how many never arrived."""
    accept = [sample.accept_seconds for sample in report.samples]
    arrivals = dumps.probe_arrivals
    e2e = [arrivals[s.probe_id] - s.accepted_at for s in report.samples if s.probe_id in arrivals]
    lost = len(report.samples) - len(e2e)
    if system == "ceiling":  # the sink is the acceptor: nothing travels after the 250
        return accept, [], lost
    return accept, e2e, lost


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def measure(
    config: BenchConfig, target: SystemUnderTest, sink: Sink, workdir: Path, *, size: int, count: int, repetition: int
) -> RunResult:
    """One measured run of `count` messages; reruns (bounded) when smtp-source finished before the target duration."""
    reruns = 0
    while True:
        result = await _measure_once(config, target, sink, workdir, size=size, count=count, repetition=repetition)
        if result.error or result.source_seconds >= config.duration or reruns >= MAX_RERUNS:
            result.short_runs_repeated = reruns
            return result
        reruns += 1
        count = math.ceil(count * config.duration / max(result.source_seconds, 0.01) * CALIBRATION_MARGIN)


async def _measure_once(
    config: BenchConfig, target: SystemUnderTest, sink: Sink, workdir: Path, *, size: int, count: int, repetition: int
) -> RunResult:
    sink.clear_dumps()
    before = sink.messages()
    routes_before = await asyncio.to_thread(target.route_counts)  # before the CPU window: the scrapes cost CPU too
    cpu_before = {name: cpu_seconds(pids) for name, pids in target.cpu_pids.items()}
    api: ApiSourceResult | None = None
    if target.api is not None:
        api = await _api_source(config, target.api, count, size, probes=True)
        source, report = api.source, api.probes
    else:
        probe = LatencyProbe(
            target.address,
            target.port,
            run_id=uuid.uuid4().hex[:12],
            size=size,
            sessions=config.probe_sessions,
            rate=config.probe_rate,
        )
        probe.start()
        try:
            source = await _source(config, target, workdir, count, size)
        finally:
            await probe.stop()
        report = probe.report
    expected = before + source.accepted + len(report.samples)
    drained = await wait_for_sink(sink, expected, within=_drain_bound(config, source), target=target)
    cpu_used = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in target.cpu_pids.items()}
    route_answers = route_paths.difference(await asyncio.to_thread(target.route_counts), routes_before)
    delivered = sink.messages() - before
    dumps = await asyncio.to_thread(sink.scan)
    last = dumps.last_load_arrival
    delivery_seconds = None if last is None or not drained else last - source.started_at
    accept, e2e, lost = _probe_latencies(report, dumps, target.name)
    if api is not None:  # every request is timed, not only the probe's
        accept = api.latencies
    per_thousand = {name: round(used / delivered * 1000, 4) for name, used in cpu_used.items()} if delivered else {}
    if cpu_used:
        services = [name for name in cpu_used if name != "rabbitmq"]
        if len(services) > 1:
            per_thousand["services total"] = round(sum(per_thousand[name] for name in services), 4)
        if "rabbitmq" in cpu_used:
            per_thousand["total"] = round(sum(per_thousand[name] for name in cpu_used), 4)
    error = None
    if source.returncode != 0 or source.accepted != source.requested:
        error = f"{source.tool} exited {source.returncode} after {source.accepted} of {source.requested}: "
        error += source.output_tail
    elif not drained:
        error = f"not delivered within {_drain_bound(config, source):.0f} s: {delivered} of {expected - before}"
    return RunResult(
        system=target.name,
        size=size,
        repetition=repetition,
        requested=source.requested,
        accepted=source.accepted,
        source_seconds=round(source.wall_seconds, 3),
        accepted_rate=round(source.rate, 2),
        delivered=delivered,
        delivered_load=dumps.load_messages,
        delivery_seconds=None if delivery_seconds is None else round(delivery_seconds, 3),
        delivered_rate=round(dumps.load_messages / delivery_seconds, 2) if delivery_seconds else None,
        drained=drained,
        probe_messages=len(report.samples),
        probe_errors=len(report.errors),
        probe_lost=lost,
        accept_p50_ms=_ms(percentile(accept, 0.50)),
        accept_p99_ms=_ms(percentile(accept, 0.99)),
        e2e_p50_ms=_ms(percentile(e2e, 0.50)),
        e2e_p99_ms=_ms(percentile(e2e, 0.99)),
        cpu_seconds={name: round(used, 3) for name, used in cpu_used.items()},
        cpu_per_1000=per_thousand,
        peak_rss_mib={name: round(sum_status_kib(pids, "VmHWM") / 1024, 1) for name, pids in target.rss_pids.items()},
        error=error,
        probe_error_examples=report.errors[:5],
        accept_ms=[round(value * 1000, 3) for value in accept],
        e2e_ms=[round(value * 1000, 3) for value in e2e],
        source_cpu_per_1000=round(api.cpu_seconds / delivered * 1000, 4) if api is not None and delivered else None,
        route_answers=route_answers,
    )
