"""Benchmark options: `BENCH_*` environment variables, overridden by command-line flags.

`BENCH_QUICK=1` (or `--quick`) is for development: one repetition of ~5 s runs and only
the 1,000-session idle scenario, unless those are set explicitly. `kubemta-api` is kubemta
loaded through its HTTP sending API (POST /v1/messages) instead of SMTP; it is one of the
systems by default, in quick runs too.
"""

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

SYSTEMS = ("kubemta", "kubemta-api", "postfix", "ceiling")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run is parametrised by."""

    quick: bool
    systems: tuple[str, ...]
    sizes: tuple[int, ...]
    repetitions: int
    duration: float
    sessions: int
    keep_sessions: bool
    ingress_processes: int
    idle_sessions: tuple[int, ...]
    probe_sessions: int
    probe_rate: float
    kubemta_log_level: str
    drain_timeout: float
    results_dir: Path
    keep_tmp: bool


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part and part != "0")


def _flag(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes", "on"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="kubemta vs Postfix vs the smtp-sink ceiling on this machine (issue 7). "
        "Every flag has a BENCH_* environment variable; flags win.",
    )
    add = parser.add_argument
    add("--quick", action=argparse.BooleanOptionalAction, default=None, help="BENCH_QUICK: 1 repetition, ~5 s runs")
    add("--systems", help=f"BENCH_SYSTEMS: comma list of {','.join(SYSTEMS)} (default: all)")
    add("--sizes", help="BENCH_SIZES: message payload sizes in bytes, smtp-source -l (default: 1024,10240)")
    add("--repetitions", type=int, help="BENCH_REPETITIONS: runs per system and size (default 3; quick 1)")
    add("--duration", type=float, help="BENCH_DURATION: least seconds smtp-source runs (default 20; quick 5)")
    add("--sessions", type=int, help="BENCH_SESSIONS: parallel smtp-source sessions and API clients (default 20)")
    add(
        "--keep-sessions",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BENCH_KEEP_SESSIONS: smtp-source -d, several messages per connection (default: one per connection)",
    )
    add("--ingress-processes", type=int, help="BENCH_INGRESS_PROCESSES: kubemta ingress processes (default 1)")
    add("--idle-sessions", help="BENCH_IDLE_SESSIONS: idle-session counts, 0 = skip (default 1000,10000; quick 1000)")
    add(
        "--probe-sessions",
        type=int,
        help="BENCH_PROBE_SESSIONS: SMTP latency-probe sessions, 0 = no probes (default 2)",
    )
    add(
        "--probe-rate",
        type=float,
        help="BENCH_PROBE_RATE: probe messages per second in all, SMTP probe and API source alike (default 10)",
    )
    add("--kubemta-log-level", help="BENCH_KUBEMTA_LOG_LEVEL: KUBEMTA_LOG_LEVEL of the services (default INFO)")
    add("--drain-timeout", type=float, help="BENCH_DRAIN_TIMEOUT: least seconds to wait for delivery (default 120)")
    add("--results-dir", help="BENCH_RESULTS_DIR: where the JSON goes (default bench/results)")
    add("--keep-tmp", action=argparse.BooleanOptionalAction, default=None, help="BENCH_KEEP_TMP: keep logs, dumps")
    return parser


def load(argv: list[str] | None = None) -> BenchConfig:
    """Options from the environment and `argv`; ValueError when one is invalid."""
    args = vars(_parser().parse_args(argv))

    def pick(name: str, default: str) -> str:
        value = args.get(name)
        if value is not None:
            return str(value)
        return os.environ.get("BENCH_" + name.upper(), default)

    quick = args["quick"] if args["quick"] is not None else _flag(os.environ.get("BENCH_QUICK", "0"))
    systems = tuple(part for part in pick("systems", ",".join(SYSTEMS)).replace(" ", "").split(",") if part)
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown or not systems:
        raise ValueError(f"BENCH_SYSTEMS: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    keep_sessions = (
        args["keep_sessions"]
        if args["keep_sessions"] is not None
        else _flag(os.environ.get("BENCH_KEEP_SESSIONS", "0"))
    )
    keep_tmp = args["keep_tmp"] if args["keep_tmp"] is not None else _flag(os.environ.get("BENCH_KEEP_TMP", "0"))
    config = BenchConfig(
        quick=quick,
        systems=tuple(name for name in SYSTEMS if name in systems),
        sizes=_ints(pick("sizes", "1024,10240")),
        repetitions=int(pick("repetitions", "1" if quick else "3")),
        duration=float(pick("duration", "5" if quick else "20")),
        sessions=int(pick("sessions", "20")),
        keep_sessions=keep_sessions,
        ingress_processes=int(pick("ingress_processes", "1")),
        idle_sessions=_ints(pick("idle_sessions", "1000" if quick else "1000,10000")),
        probe_sessions=int(pick("probe_sessions", "2")),
        probe_rate=float(pick("probe_rate", "10")),
        kubemta_log_level=pick("kubemta_log_level", "INFO").upper(),
        drain_timeout=float(pick("drain_timeout", "120")),
        results_dir=Path(pick("results_dir", str(ROOT / "bench" / "results"))),
        keep_tmp=keep_tmp,
    )
    if not config.sizes or config.repetitions < 1 or config.duration <= 0 or config.sessions < 1:
        raise ValueError("BENCH_SIZES, BENCH_REPETITIONS, BENCH_DURATION and BENCH_SESSIONS must be positive")
    if config.ingress_processes < 1 or config.probe_sessions < 0 or config.probe_rate <= 0:
        raise ValueError("BENCH_INGRESS_PROCESSES must be >= 1, BENCH_PROBE_SESSIONS >= 0, BENCH_PROBE_RATE > 0")
    return config
