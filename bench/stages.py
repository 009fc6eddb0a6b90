"""`python -m bench.stages`: each kubemta stage measured alone for 1 and 2 processes, and the broker's own limit.

For every process count of BENCH_STAGE_PROCESSES (1,2): a vhost and smtp-sink of their
own; the ingress under smtp-source fills `inbound` with BENCH_STAGE_MESSAGES messages of
1 KiB; then the queue-manager drains `inbound`, the dns-resolver `route` and the
delivery-worker `deliver` into the sink, each alone (bench.stage_runs); then the
ingress and the queue-manager once more, with the resolver's route answer fresh (jobs straight
to `deliver`: the steady state for known domains). Then the broker
alone (bench.broker_limit). Before each measurement the machine is given time to go quiet
(bench.settle, BENCH_SETTLE_TIMEOUT). The table goes to stdout, the figures to
`bench/results/stages-<timestamp>.json` and `.md`, copied to `stages-latest.*`; the
Markdown is docs/scale.md's table. Every process started is stopped by PID, also on errors.
"""

import asyncio
import json
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import rabbitmq, scale_report
from bench.broker_limit import BrokerPhase, declare_queue, run_phase
from bench.config import BenchConfig, kubemta_env_text, load
from bench.machine import describe, python_text
from bench.run import _workdir, say
from bench.settle import settle
from bench.sink import Sink
from bench.stage_runs import FRESH, INPUT, StageBench, StageResult, failed
from tests.harness.ports import free_port, random_loopback_net


async def one_count(config: BenchConfig, workdir: Path, prefix: str, processes: int) -> list[StageResult]:
    """The four stages with `processes` processes each, one after the other on a vhost of their own."""
    run_dir = workdir / f"stages-{processes}"
    run_dir.mkdir(mode=0o755)
    vhost = await asyncio.to_thread(rabbitmq.create_vhost)
    sink = Sink(run_dir, f"{prefix}.2", free_port(f"{prefix}.2"))
    results: list[StageResult] = []
    try:
        await sink.start()
        bench = StageBench(config, run_dir, vhost, sink, f"{prefix}.1")
        quiet = await settle(config.settle_timeout)
        say(f"ingress x{processes}: {config.stage_messages} messages")
        results.append(await bench.ingress(processes, config.stage_messages, quiet))
        say(f"  {results[-1]}")
        for stage in INPUT:
            quiet = await settle(config.settle_timeout)
            say(f"{stage} x{processes}: draining {INPUT[stage]}")
            try:
                results.append(await bench.drain(stage, processes, quiet))
            except Exception as exc:  # one failed stage is reported, the next ones still run
                results.append(failed(stage, processes, f"{type(exc).__name__}: {exc}"))
            say(f"  {results[-1]}")
        try:
            results += await fresh_routes(config, bench, processes)
        except Exception as exc:
            results.append(failed("queue-manager", processes, f"{type(exc).__name__}: {exc}"))
            results[-1].variant = FRESH
    finally:
        sink.stop()
        await asyncio.to_thread(rabbitmq.delete_vhost, vhost)
    return results


async def fresh_routes(config: BenchConfig, bench: StageBench, processes: int) -> list[StageResult]:
    """The ingress and the queue-manager again, now that the resolver's route answer for the domain is fresh (the
    routes stream), as in a steady flow to known domains: the ingress sends each message's one job straight to
    `deliver` (kubemta_ingress.direct_jobs), the queue-manager every first-attempt job it splits. The ingress is
    measured filling `deliver`, which the worker then drains (not reported twice); then `inbound` is filled
    again by the ingress with the shortcut off (not reported twice) and drained by the queue-manager, whose
    jobs the worker drains again."""
    results: list[StageResult] = []
    await settle(config.settle_timeout)
    say(f"ingress x{processes}: {config.stage_messages} messages with the route answers fresh")
    direct = await bench.ingress(processes, config.stage_messages, None, variant=FRESH)
    say(f"  {direct}")
    results.append(direct)
    await bench.drain("delivery-worker", processes, None)
    refill = await bench.ingress(processes, config.stage_messages, None)
    if refill.error:
        refused = failed("queue-manager", processes, f"refilling inbound: {refill.error}")
        refused.variant = FRESH
        return [*results, refused]
    await settle(config.settle_timeout)
    say(f"queue-manager x{processes}: draining inbound with the route answers fresh")
    measured = await bench.drain("queue-manager", processes, None, variant=FRESH)
    say(f"  {measured}")
    await bench.drain("delivery-worker", processes, None)
    return [*results, measured]


async def broker(config: BenchConfig) -> list[BrokerPhase]:
    """Publishes with confirms, then consumes with acks, of BENCH_BROKER_MESSAGES on one quorum queue."""
    vhost = await asyncio.to_thread(rabbitmq.create_vhost)
    try:
        url = rabbitmq.amqp_url(vhost)
        await declare_queue(url)
        beam = await asyncio.to_thread(rabbitmq.beam_pid)
        phases = []
        for phase in ("publish", "consume"):
            quiet = await settle(config.settle_timeout)
            say(f"broker: {phase} {config.broker_messages} messages")
            phases.append(await asyncio.to_thread(run_phase, phase, url, config.broker_messages, beam, quiet))
            say(f"  {phases[-1]}")
        return phases
    finally:
        await asyncio.to_thread(rabbitmq.delete_vhost, vhost)


def write(results_dir: Path, started: datetime, document: dict[str, Any]) -> Path:
    """`stages-<timestamp>.json` and `.md`, copied to `stages-latest.*`; the JSON's path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = "stages-" + started.strftime("%Y%m%dT%H%M%SZ")
    texts = {".json": json.dumps(document, indent=2) + "\n", ".md": scale_report.render(document, markdown=True)}
    for suffix, text in texts.items():
        (results_dir / f"{stem}{suffix}").write_text(text)
        (results_dir / f"stages-latest{suffix}").write_text(text)
    return results_dir / f"{stem}.json"


async def _main(config: BenchConfig) -> int:
    started = datetime.now(UTC)
    clock = time.monotonic()
    rabbitmq.require_broker()
    machine = await asyncio.to_thread(describe)
    prefix = random_loopback_net()
    workdir = _workdir()
    stages: list[StageResult] = []
    try:
        for processes in config.stage_processes:
            stages += await one_count(config, workdir, prefix, processes)
        phases = await broker(config)
    finally:
        if config.keep_tmp:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_average = "/".join(f"{value:.1f}" for value in machine["load_average_at_start"])
    title = (
        f"kubemta stages alone, {started.strftime('%Y-%m-%d %H:%M UTC')}: {machine['nproc']} x {machine['cpu_model']}"
        f", RabbitMQ {machine['rabbitmq']}, {python_text(machine)}, "
        f"load average at start {load_average}; {config.stage_messages} messages "
        f"of 1 KiB per stage, {config.sessions} smtp-source sessions into the ingress, kubemta log level "
        f"{config.kubemta_log_level}{kubemta_env_text(config.kubemta_env)}; broker: {config.broker_messages} messages"
    )
    document: dict[str, Any] = {
        "started": started.isoformat(),
        "elapsed_seconds": round(time.monotonic() - clock, 1),
        "title": title,
        "machine": machine,
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in config.__dict__.items()},
        "stages": [each.to_json() for each in stages],
        "broker": [each.to_json() for each in phases],
    }
    path = write(config.results_dir, started, document)
    sys.stdout.write(scale_report.render(document, markdown=False))
    sys.stdout.write(f"\nJSON: {path} (and stages-latest.json; Markdown in .md)\n")
    failures = [each.error for each in stages if each.error] + [each.error for each in phases if each.error]
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv)
    except ValueError as exc:
        sys.stderr.write(f"bench.stages: {exc}\n")
        return 2
    try:
        return asyncio.run(_main(config))
    except KeyboardInterrupt:
        sys.stderr.write("bench.stages: interrupted; every process it started was stopped\n")
        return 130
    except Exception:
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
