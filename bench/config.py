"""Benchmark options: `BENCH_*` environment variables, overridden by command-line flags.

`BENCH_QUICK=1` (or `--quick`) is for development: one repetition of ~5 s runs and only
the 1,000-session idle scenario, unless those are set explicitly (and smaller queues for the
per-stage figures of bench.stages). `kubemta-api` is kubemta
loaded through its HTTP sending API (POST /v1/messages) instead of SMTP; it is one of the
systems by default, in quick runs too.
"""

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

SYSTEMS = ("kubemta", "kubemta-api", "postfix", "ceiling")
STAGE_SERVICES = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
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
    processes: dict[str, int]  # service -> processes of it (BENCH_PROCESSES; ingress also BENCH_INGRESS_PROCESSES)
    idle_sessions: tuple[int, ...]
    probe_sessions: int
    probe_rate: float
    kubemta_log_level: str
    drain_timeout: float
    results_dir: Path
    keep_tmp: bool
    settle_timeout: float = 0.0  # at most this long before each run, wait until the machine is idle (bench.settle)
    stage_messages: int = 2000  # bench.stages: messages each stage drains
    stage_processes: tuple[int, ...] = (1, 2)  # bench.stages: processes per stage, each measured
    broker_messages: int = 20000  # bench.stages: messages of the broker's own publish/consume measurement
    kubemta_env: dict[str, str] = field(default_factory=dict)  # BENCH_KUBEMTA_ENV: more settings of every service

    def count(self, service: str) -> int:
        """How many processes of `service` a run starts."""
        return self.processes.get(service, 1)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part and part != "0")


def processes(text: str, ingress: int = 1) -> dict[str, int]:
    """`queue-manager=2,delivery-worker=2` -> {service: processes}; ingress is `ingress` unless named there."""
    found = {service: 1 for service in STAGE_SERVICES}
    found["ingress"] = ingress
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        service, _, number = part.partition("=")
        if service not in STAGE_SERVICES or not number.isdigit() or int(number) < 1:
            raise ValueError(f"BENCH_PROCESSES: {part!r} is not <service>=<processes >= 1> of {STAGE_SERVICES}")
        found[service] = int(number)
    return found


def processes_text(counts: dict[str, int]) -> str:
    """`ingress 1, queue-manager 2, ...`: the processes of each stage, for titles."""
    return ", ".join(f"{service} {number}" for service, number in counts.items())


def kubemta_env(text: str) -> dict[str, str]:
    """`KUBEMTA_A=1 KUBEMTA_B=2` (whitespace between settings) -> {name: value}; only KUBEMTA_ names."""
    found: dict[str, str] = {}
    for part in text.split():
        name, equals, value = part.partition("=")
        if not equals or not name.startswith("KUBEMTA_") or not name[len("KUBEMTA_") :].replace("_", "").isalnum():
            raise ValueError(f"BENCH_KUBEMTA_ENV: {part!r} is not KUBEMTA_<NAME>=<value>")
        found[name] = value
    return found


def kubemta_env_text(env: dict[str, str]) -> str:
    """`, settings KUBEMTA_A=1 KUBEMTA_B=2` for titles, or nothing when the defaults ran."""
    return f", settings {' '.join(f'{name}={value}' for name, value in env.items())}" if env else ""


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
    add(
        "--processes",
        help="BENCH_PROCESSES: processes per stage, e.g. queue-manager=2,delivery-worker=2 (default 1 each; "
        "ingress from BENCH_INGRESS_PROCESSES unless named here)",
    )
    add(
        "--settle-timeout",
        type=float,
        help="BENCH_SETTLE_TIMEOUT: before each run wait at most this many seconds until the CPUs are idle "
        "(default 15; quick 5; 0 = do not wait)",
    )
    add(
        "--stage-messages",
        type=int,
        help="BENCH_STAGE_MESSAGES: messages per stage in bench.stages (default 10000; quick 2000)",
    )
    add("--stage-processes", help="BENCH_STAGE_PROCESSES: process counts per stage bench.stages measures (default 1,2)")
    add(
        "--broker-messages",
        type=int,
        help="BENCH_BROKER_MESSAGES: messages of bench.stages' broker measurement (default 50000; quick 10000)",
    )
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
    add(
        "--kubemta-env",
        help="BENCH_KUBEMTA_ENV: more settings of every kubemta service, 'KUBEMTA_A=1 KUBEMTA_B=2' (default none)",
    )
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
    ingress = int(pick("ingress_processes", "1"))
    config = BenchConfig(
        quick=quick,
        systems=tuple(name for name in SYSTEMS if name in systems),
        sizes=_ints(pick("sizes", "1024,10240")),
        repetitions=int(pick("repetitions", "1" if quick else "3")),
        duration=float(pick("duration", "5" if quick else "20")),
        sessions=int(pick("sessions", "20")),
        keep_sessions=keep_sessions,
        ingress_processes=processes(pick("processes", ""), ingress)["ingress"],
        processes=processes(pick("processes", ""), ingress),
        idle_sessions=_ints(pick("idle_sessions", "1000" if quick else "1000,10000")),
        probe_sessions=int(pick("probe_sessions", "2")),
        probe_rate=float(pick("probe_rate", "10")),
        kubemta_log_level=pick("kubemta_log_level", "INFO").upper(),
        drain_timeout=float(pick("drain_timeout", "120")),
        results_dir=Path(pick("results_dir", str(ROOT / "bench" / "results"))),
        keep_tmp=keep_tmp,
        settle_timeout=float(pick("settle_timeout", "5" if quick else "15")),
        stage_messages=int(pick("stage_messages", "3000" if quick else "10000")),
        stage_processes=_ints(pick("stage_processes", "1,2")),
        broker_messages=int(pick("broker_messages", "10000" if quick else "50000")),
        kubemta_env=kubemta_env(pick("kubemta_env", "")),
    )
    if not config.sizes or config.repetitions < 1 or config.duration <= 0 or config.sessions < 1:
        raise ValueError("BENCH_SIZES, BENCH_REPETITIONS, BENCH_DURATION and BENCH_SESSIONS must be positive")
    if config.ingress_processes < 1 or config.probe_sessions < 0 or config.probe_rate <= 0:
        raise ValueError("BENCH_INGRESS_PROCESSES must be >= 1, BENCH_PROBE_SESSIONS >= 0, BENCH_PROBE_RATE > 0")
    if config.stage_messages < 1 or config.broker_messages < 1 or not config.stage_processes:
        raise ValueError("BENCH_STAGE_MESSAGES, BENCH_BROKER_MESSAGES and BENCH_STAGE_PROCESSES must be positive")
    return config
