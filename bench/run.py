"""The benchmark's entry point: every system and size, repeated; the idle-session scenario; the report.

Runs alternate between the systems within each repetition, so background load on the
machine hits them alike. Every process started is stopped by PID in `finally` blocks,
also on Ctrl-C (SIGINT) and SIGTERM.
"""

import asyncio
import contextlib
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import postfix, rabbitmq, route_paths
from bench.config import BenchConfig, kubemta_env_text, load, processes_text
from bench.idle_sessions import SOURCE_ADDRESSES, IdleResult, measure_idle
from bench.machine import describe
from bench.report import method_lines, paired_ratios, ratios, summarise, table, write_results
from bench.settle import settle
from bench.sink import Sink
from bench.systems import system
from bench.throughput import RunResult, calibrate, failed_run, measure, warm_up
from tests.harness.ports import free_port, random_loopback_net


def say(text: str) -> None:
    sys.stderr.write(f"[bench {datetime.now().strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE (inherited by the services started later) to at least `needed` when allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):  # only root may raise the hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


async def one_run(
    config: BenchConfig, workdir: Path, prefix: str, name: str, size: int, repetition: int, counts: dict[str, int]
) -> RunResult:
    """Wait for a quiet machine (bounded); a fresh sink and system; calibrate the count on the first repetition,
    or else a discarded warm-up, so every measured run follows the same start; one measured run."""
    run_dir = workdir / f"{name}-{size}-{repetition}"
    run_dir.mkdir(mode=0o755)
    quiet = await settle(config.settle_timeout)
    if not quiet.quiet:
        say(f"the CPUs were still busy after {quiet.waited_seconds:.0f} s ({quiet.idle_fraction:.0%} idle): running")
    sink = Sink(run_dir, f"{prefix}.2", free_port(f"{prefix}.2"))
    key = f"{name}/{size}"
    try:
        await sink.start()
        async with system(name, config, run_dir, f"{prefix}.1", sink) as target:
            if key not in counts:
                counts[key] = await calibrate(config, target, sink, run_dir, size)
                say(f"{name} {size} B: calibrated to {counts[key]} messages")
            else:
                await warm_up(config, target, sink, run_dir, size)
            result = await measure(config, target, sink, run_dir, size=size, count=counts[key], repetition=repetition)
            counts[key] = max(counts[key], result.requested)
            result.settled = quiet.to_json()
            return result
    except Exception as exc:  # a failed run is reported, the others still run
        say(f"{name} {size} B #{repetition} failed: {exc}")
        return failed_run(name, size, repetition, f"{type(exc).__name__}: {exc}")
    finally:
        sink.stop()


def _progress(result: RunResult) -> str:
    if result.error:
        return f"{result.system} {result.size} B #{result.repetition}: ERROR {result.error[:300]}"
    return (
        f"{result.system} {result.size} B #{result.repetition}: {result.accepted} msgs in {result.source_seconds:.1f} s"
        f" = {result.accepted_rate:.0f} accepted/s, {result.delivered_rate or 0:.0f} delivered/s, accept p50/p99 "
        f"{result.accept_p50_ms} / {result.accept_p99_ms} ms, e2e p50/p99 {result.e2e_p50_ms} / {result.e2e_p99_ms} ms"
        + (f", straight to deliver {route_paths.run_text(result.route_answers)}" if result.route_answers else "")
    )


async def run_all(config: BenchConfig, workdir: Path, prefix: str) -> tuple[list[RunResult], list[IdleResult]]:
    runs: list[RunResult] = []
    counts: dict[str, int] = {}
    for size in config.sizes:
        for repetition in range(1, config.repetitions + 1):
            for name in config.systems:
                say(f"{name} {size} B, repetition {repetition}/{config.repetitions}")
                result = await one_run(config, workdir, prefix, name, size, repetition, counts)
                say(_progress(result))
                runs.append(result)
    idle: list[IdleResult] = []
    for sessions in config.idle_sessions:
        say(f"idle sessions: {sessions}")
        try:
            result_idle = await measure_idle(config, workdir, prefix, sessions)
        except Exception as exc:
            result_idle = IdleResult(sessions, 0, 0, 0.0, config.ingress_processes, 0.0, 0.0, None, repr(exc))
        say(f"idle sessions: {result_idle}")
        idle.append(result_idle)
    return runs, idle


def _workdir() -> Path:
    """The run's temporary directory, on disk (Postfix's queue lives in it), readable by the postfix user."""
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-bench-"))
    workdir.chmod(0o755)
    return workdir


async def _main(config: BenchConfig) -> int:
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = datetime.now(UTC)
    clock = time.monotonic()
    await asyncio.to_thread(postfix.ensure_installed)
    rabbitmq.require_broker()
    fd_limit = raise_fd_limit(max(config.idle_sessions, default=0) + 1024)
    machine = await asyncio.to_thread(describe)
    prefix = random_loopback_net()
    workdir = _workdir()
    say(f"loopback {prefix}.0/24, work directory {workdir}, RLIMIT_NOFILE {fd_limit}")
    try:
        runs, idle = await run_all(config, workdir, prefix)
    finally:
        if config.keep_tmp:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(runs)
    ratio = ratios(summary, config.sizes)
    api_ratio = ratios(summary, config.sizes, "kubemta-api", "kubemta")
    paired = paired_ratios(runs, config.sizes)
    mode = "several messages per connection (-d)" if config.keep_sessions else "one message per connection"
    method = method_lines(
        sessions=config.sessions,
        mode=mode,
        duration=config.duration,
        repetitions=config.repetitions,
        probe_sessions=config.probe_sessions,
        probe_rate=config.probe_rate,
        sources=SOURCE_ADDRESSES,
    )
    title = (
        f"kubemta benchmark {started.strftime('%Y-%m-%d %H:%M UTC')}: {machine['nproc']} x {machine['cpu_model']}, "
        f"{machine['mem_total_gib']} GiB RAM; {config.sessions} smtp-source sessions, {mode} "
        f"(kubemta-api: {config.sessions} HTTP clients, keep-alive); "
        f"median [min-max] of {config.repetitions} run(s) of >= {config.duration:.0f} s; "
        f"kubemta log level {config.kubemta_log_level}, processes {processes_text(config.processes)}"
        f"{kubemta_env_text(config.kubemta_env)}"
    )
    text = table(
        summary,
        ratio,
        idle,
        sizes=config.sizes,
        systems=config.systems,
        title=title,
        api_ratio=api_ratio,
        paired=paired,
    )
    elapsed = round(time.monotonic() - clock, 1)
    document: dict[str, Any] = {
        "started": started.isoformat(),
        "elapsed_seconds": elapsed,
        "machine": machine,
        "config": {key: value for key, value in config.__dict__.items()},
        "method": method,
        "summary": summary,
        "ratio_kubemta_to_postfix": ratio,
        "ratio_api_to_smtp": api_ratio,
        "paired_ratio_kubemta_to_postfix": paired,
        "runs": [run.to_json() for run in runs],
        "idle_sessions": [result.to_json() for result in idle],
        "table": text,
    }
    path = write_results(config.results_dir, started, document)
    sys.stdout.write(text + "\nHow each figure is measured:\n" + "".join(f"- {line}\n" for line in method))
    sys.stdout.write(f"\nJSON: {path} (and latest.json; Markdown tables in .md); took {elapsed:.0f} s\n")
    failed = sum(1 for run in runs if run.error) + sum(1 for result in idle if result.error)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv)
    except ValueError as exc:
        sys.stderr.write(f"bench: {exc}\n")
        return 2
    try:
        return asyncio.run(_main(config))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stderr.write("bench: interrupted; every process it started was stopped\n")
        return 130
    except Exception:
        traceback.print_exc()
        return 1
