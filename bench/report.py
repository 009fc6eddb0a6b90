"""The results: a summary per system and size, the stdout table, and the JSON file under bench/results/."""

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import markdown
from bench.idle_sessions import IdleResult
from bench.stats import Spread, percentile, spread
from bench.throughput import RunResult

FIGURES = ("accepted_rate", "delivered_rate", "accept_p50_ms", "accept_p99_ms", "e2e_p50_ms", "e2e_p99_ms")
HEADINGS = ("accepted msg/s", "delivered msg/s", "accept p50 ms", "accept p99 ms", "e2e p50 ms", "e2e p99 ms")
CPU_ORDER = ("ingress", "queue-manager", "dns-resolver", "delivery-worker", "services total", "rabbitmq", "total")

METHOD = [
    "Load: Postfix smtp-source, {sessions} parallel sessions, {mode}, payload -l SIZE bytes (plus smtp-source's "
    "headers), sender bench@client.bench.test, recipient rcpt@bench.test; every system delivers bench.test through a "
    "static transport (kubemta KUBEMTA_TRANSPORTS, Postfix transport_maps) to Postfix smtp-sink on another loopback "
    "address; ceiling = smtp-source straight into smtp-sink.",
    "Runs: the count of each system and size is calibrated by a pilot so smtp-source runs >= {duration:.0f} s (a "
    "shorter run is repeated with a larger count); each run starts a fresh sink and system (own RabbitMQ vhost, "
    "services started and /readyz = 200, or a new private Postfix); systems alternate within each repetition; "
    "median [min-max] of {repetitions} repetition(s).",
    "accepted msg/s = smtp-source's count of accepted messages / its wall time from start to exit.",
    "delivered msg/s = smtp-source's messages received by smtp-sink (its per-message dump files, smtp-sink -d on "
    "tmpfs, probe messages left out) / time from smtp-source's start to the last one's arrival (newest dump mtime); "
    "a run ends when smtp-sink's -c counter has every accepted message (load + probe).",
    "accept p50/p99 = an own asyncio SMTP client runs {probe_sessions} sessions beside smtp-source, one message per "
    "connection, {probe_rate:g} msg/s in all, same size, and times the end of DATA (the '.' line written after the "
    "content was flushed) to the complete 250 reply; nearest-rank percentiles per run.",
    "e2e p50/p99 = for each probe message, its arrival at smtp-sink (mtime of its dump file, found by its recipient) "
    "minus the time its 250 was received; not applicable to the ceiling.",
    "CPU s per 1,000 msgs = utime+stime (+ reaped children) from /proc/<pid>/stat of each service process and of "
    "RabbitMQ's beam.smp (the shared broker: includes whatever else uses it), or of the whole Postfix master tree, "
    "from smtp-source's start until the sink has every message, per 1,000 messages delivered (probe included).",
    "peak RSS = VmHWM from /proc/<pid>/status of each kubemta service at the end of the run.",
    "straight to deliver = the share of the first attempts the kubemta ingress looked up that it sent straight to "
    "the deliver queue (its route answer fresh), from kubemta_route_answers_total{{result}} on the ingress' /metrics "
    "before and after the run; the others went through inbound and the queue-manager, a dearer path (the result "
    "names why: missing, stale, waiting, decided).",
    "Before each run: a bounded wait (BENCH_SETTLE_TIMEOUT) until the CPUs were >= 85% idle for 2 s in a row "
    "(/proc/stat; the previous run's teardown, the broker deleting its vhost, other work); a run not calibrated "
    "starts with a discarded warm-up of 10 messages per session; the spread is (max - min) / median of the runs.",
    "kubemta / Postfix per repetition = each repetition's kubemta run divided by its Postfix run (run back to back, "
    "so both met the same phase of the machine), for delivered msg/s and for total CPU per message (kubemta's "
    "services and broker against Postfix's master tree); median [min-max] of those ratios over the repetitions "
    "where both runs succeeded.",
    "kubemta-api = the same kubemta stack loaded through its HTTP sending API (POST /v1/messages) instead of SMTP, "
    "delivering to the same sink: {sessions} clients in the benchmark's own Python process (bench/api_source.py, "
    "httpx.AsyncClient, one HTTP/1.1 keep-alive connection each, unlike smtp-source's {mode}) POST JSON messages "
    "from bench@client.bench.test to rcpt@bench.test whose text is SIZE bytes (kubemta composes the headers), with "
    "an API key for client.bench.test made by `kubemta-admin api-keys create`; any answer but 202 fails the run. "
    "Its count is calibrated and its figures taken as SMTP's: accepted msg/s = 202s / the source's wall time; "
    "delivered msg/s and CPU likewise.",
    "kubemta-api accept p50/p99 = every request's time from writing it to reading its complete 202 (sent only after "
    "the broker's confirm, as SMTP's 250), measured in the load generator (so its own scheduling is included) under "
    "the full load of {sessions} clients that each send the next request at once: unlike SMTP's light probe beside "
    "the load, it includes the queueing at the saturated ingress (about clients / throughput, Little's law). "
    "e2e p50/p99 = {probe_rate:g} msg/s in all of the API load go to probe recipients, timed from their 202 to their "
    "arrival at smtp-sink (negative when the 202 reaches the client after the message reached the sink). The API "
    "source's own CPU (this process, getrusage) is reported apart (source_cpu_per_1000), not in kubemta's total, as "
    "smtp-source's is not measured.",
    "idle sessions = N sessions opened (EHLO answered) against a fresh kubemta ingress from {sources} loopback "
    "source addresses, held 2 s; ingress VmRSS before and with them; per session = difference / N.",
]


def method_lines(
    *,
    sessions: int,
    mode: str,
    duration: float,
    repetitions: int,
    probe_sessions: int,
    probe_rate: float,
    sources: int,
) -> list[str]:
    """How each figure is measured (METHOD), with this run's settings filled in."""
    values = {"sessions": sessions, "mode": mode, "duration": duration, "repetitions": repetitions}
    values |= {"probe_sessions": probe_sessions, "probe_rate": probe_rate, "sources": sources}
    return [line.format(**values) for line in METHOD]


def summarise(runs: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Per `size/system`: the spread of every figure over the successful runs."""
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(f"{run.size}/{run.system}", []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for key, group in groups.items():
        good = [run for run in group if run.error is None]
        entry: dict[str, Any] = {"runs": len(group), "failed": len(group) - len(good)}
        for figure in FIGURES:
            entry[figure] = spread([getattr(run, figure) for run in good])
        for name in ("accept_ms", "e2e_ms"):
            pooled = [value for run in good for value in getattr(run, name)]
            entry[f"pooled_{name}"] = {
                "samples": len(pooled),
                "p50": percentile(pooled, 0.50),
                "p99": percentile(pooled, 0.99),
                "max": max(pooled, default=None),
            }
        entry["spread_pct"] = {figure: spread_pct(entry[figure]) for figure in ("accepted_rate", "delivered_rate")}
        entry["started_busy"] = sum(1 for run in good if run.settled is not None and not run.settled["quiet"])
        entry["source_cpu_per_1000"] = spread([run.source_cpu_per_1000 for run in good])
        cpu_keys = sorted({name for run in good for name in run.cpu_per_1000})
        entry["cpu_per_1000"] = {name: spread([run.cpu_per_1000.get(name) for run in good]) for name in cpu_keys}
        rss_keys = sorted({name for run in good for name in run.peak_rss_mib})
        entry["peak_rss_mib"] = {name: spread([run.peak_rss_mib.get(name) for run in good]) for name in rss_keys}
        summary[key] = entry
    return summary


def spread_pct(value: Spread | None) -> float | None:
    """(max - min) / median of the repetitions, in percent: how far apart the runs were (None for one run)."""
    if value is None or value.n < 2 or not value.median:
        return None
    return round((value.high - value.low) / value.median * 100, 1)


def spread_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """One line per system and size with the runs' spread of delivered msg/s, and the runs that started busy."""
    lines = []
    for key, entry in summary.items():
        size, _, name = key.partition("/")
        pct = entry.get("spread_pct", {}).get("delivered_rate")
        busy = entry.get("started_busy", 0)
        if pct is None and not busy:
            continue
        shown = f"{name} {_size_name(int(size))}: delivered msg/s spread {'-' if pct is None else f'{pct:g}%'}"
        lines.append(shown + (f" ({busy} run(s) started with busy CPUs)" if busy else ""))
    return lines


def ratios(
    summary: dict[str, dict[str, Any]], sizes: Iterable[int], ours: str = "kubemta", theirs: str = "postfix"
) -> dict[str, dict[str, float | None]]:
    """`ours` / `theirs` (kubemta / Postfix unless told) of the accepted and delivered medians, per size."""
    found: dict[str, dict[str, float | None]] = {}
    for size in sizes:
        mine, other = summary.get(f"{size}/{ours}"), summary.get(f"{size}/{theirs}")
        if mine is None or other is None:
            continue
        found[str(size)] = {}
        for figure in ("accepted_rate", "delivered_rate"):
            a, b = mine[figure], other[figure]
            found[str(size)][figure] = round(a.median / b.median, 3) if a and b and b.median else None
    return found


def _total_cpu(run: RunResult) -> float | None:
    """The run's CPU seconds per 1,000 messages, all of it: kubemta's `total` (services and broker), Postfix's tree."""
    return run.cpu_per_1000.get("total", run.cpu_per_1000.get("postfix"))


def paired_ratios(
    runs: Iterable[RunResult], sizes: Iterable[int], ours: str = "kubemta", theirs: str = "postfix"
) -> dict[str, dict[str, Spread | None]]:
    """`ours` / `theirs` per repetition, then the median and range of those ratios, per size.

    The two runs of one repetition ran back to back (systems alternate within it), so both met the same phase of a
    machine whose speed drifts over minutes; their ratio is steadier than the ratio of the medians, whose two
    medians can come from different repetitions. Only repetitions where both runs succeeded count.
    """
    measured: dict[tuple[int, str, int], RunResult] = {
        (run.size, run.system, run.repetition): run for run in runs if run.error is None
    }
    found: dict[str, dict[str, Spread | None]] = {}
    for size in sizes:
        pairs = [
            (mine, measured[(size, theirs, repetition)])
            for (run_size, system, repetition), mine in sorted(measured.items())
            if run_size == size and system == ours and (size, theirs, repetition) in measured
        ]
        if not pairs:
            continue
        found[str(size)] = {
            "delivered_rate": spread([_quotient(mine.delivered_rate, other.delivered_rate) for mine, other in pairs]),
            "cpu_per_message": spread([_quotient(_total_cpu(mine), _total_cpu(other)) for mine, other in pairs]),
        }
    return found


def _quotient(mine: float | None, theirs: float | None) -> float | None:
    return round(mine / theirs, 3) if mine is not None and theirs else None


def paired_lines(
    paired: dict[str, dict[str, Spread | None]], ours: str = "kubemta", theirs: str = "postfix"
) -> list[str]:
    """One stdout line per size: the paired ratios' median [min-max] over the repetitions."""
    lines = []
    for size_key, values in paired.items():
        shown = ", ".join(
            f"{'delivered' if figure == 'delivered_rate' else 'CPU per message'} {_ratio_cell(value)}"
            for figure, value in values.items()
            if value is not None
        )
        lines.append(f"{ours} / {theirs} per repetition at {_size_name(int(size_key))}: {shown or '-'}")
    return lines


def _ratio_cell(value: Spread) -> str:
    if value.n == 1 or value.low == value.high:
        return f"{value.median:.2f}x"
    return f"{value.median:.2f}x [{value.low:.2f}-{value.high:.2f}]"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(value: Spread | None) -> str:
    if value is None:
        return "-"
    if value.n == 1 or value.low == value.high:
        return _number(value.median)
    return f"{_number(value.median)} [{_number(value.low)}-{_number(value.high)}]"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    line.append("  ".join("-" * width for width in widths))
    line += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return line


def _size_name(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def table(
    summary: dict[str, dict[str, Any]],
    ratio: dict[str, dict[str, float | None]],
    idle: list[IdleResult],
    *,
    sizes: Iterable[int],
    systems: Iterable[str],
    title: str,
    api_ratio: dict[str, dict[str, float | None]] | None = None,
    paired: dict[str, dict[str, Spread | None]] | None = None,
) -> str:
    """The stdout report; `api_ratio` is kubemta-api / kubemta (the API beside SMTP) per size, `paired` kubemta /
    Postfix per repetition (`paired_ratios`)."""
    lines = [title, ""]
    size_list, system_list = list(sizes), list(systems)
    rows = []
    for size in size_list:
        for name in system_list:
            entry = summary.get(f"{size}/{name}")
            if entry is None:
                continue
            failed = f" ({entry['failed']} of {entry['runs']} failed)" if entry["failed"] else ""
            rows.append([_size_name(size), name + failed, *(_cell(entry[figure]) for figure in FIGURES)])
    lines += _rows(["size", "system", *HEADINGS], rows)
    for size_key, values in ratio.items():
        shown = ", ".join(
            f"{figure.split('_')[0]} {value:.2f}x" for figure, value in values.items() if value is not None
        )
        lines.append(f"kubemta / postfix at {_size_name(int(size_key))}: {shown or '-'}")
    lines += paired_lines(paired or {})
    for size_key, values in (api_ratio or {}).items():
        shown = ", ".join(
            f"{figure.split('_')[0]} {value:.2f}x" for figure, value in values.items() if value is not None
        )
        lines.append(f"kubemta-api / kubemta (HTTP API / SMTP) at {_size_name(int(size_key))}: {shown or '-'}")
    spreads = spread_lines(summary)
    if spreads:
        lines += ["", "Spread between repetitions ((max - min) / median):", *spreads]
    cpu_rows, rss_rows = [], []
    for size in size_list:
        for name in system_list:
            entry = summary.get(f"{size}/{name}")
            if entry is None or not entry["cpu_per_1000"]:
                continue
            cpu = entry["cpu_per_1000"]
            keys = [key for key in CPU_ORDER if key in cpu] + [key for key in cpu if key not in CPU_ORDER]
            shown = "  ".join(f"{key} {_cell(cpu[key])}" for key in keys)
            if entry.get("source_cpu_per_1000") is not None:
                shown += f"  (API source, not in total: {_cell(entry['source_cpu_per_1000'])})"
            cpu_rows.append([_size_name(size), name, shown])
            rss = entry["peak_rss_mib"]
            if rss:
                shown = "  ".join(f"{key} {_cell(rss[key])}" for key in CPU_ORDER if key in rss)
                rss_rows.append([_size_name(size), name, shown])
    if cpu_rows:
        lines += ["", "CPU seconds per 1,000 messages delivered"]
        lines += _rows(["size", "system", "per process (tree)"], cpu_rows)
    if rss_rows:
        lines += ["", "Peak RSS MiB (VmHWM)"]
        lines += _rows(["size", "system", "per service"], rss_rows)
    if idle:
        lines += ["", "Idle SMTP sessions held open against the kubemta ingress (after EHLO)"]
        idle_rows = [
            [
                str(result.sessions),
                str(result.opened),
                str(result.ingress_processes),
                f"{result.rss_before_mib:.1f}",
                f"{result.rss_after_mib:.1f}",
                "-" if result.rss_per_session_kib is None else f"{result.rss_per_session_kib:.1f}",
                result.error or "",
            ]
            for result in idle
        ]
        header = ["sessions", "open", "ingress procs", "RSS before MiB", "RSS with MiB", "KiB/session", "note"]
        lines += _rows(header, idle_rows)
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Spread):
        return {"median": value.median, "min": value.low, "max": value.high, "n": value.n}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(results_dir: Path, started: datetime, document: dict[str, Any]) -> Path:
    """`bench/results/<timestamp>.json` (+ `.md` tables for the README), copied as `latest.*`; the JSON's path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    plain = _jsonable(document)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    for suffix, text in ((".json", json.dumps(plain, indent=2) + "\n"), (".md", markdown.render(plain))):
        (results_dir / f"{stem}{suffix}").write_text(text)
        (results_dir / f"latest{suffix}").write_text(text)
    return results_dir / f"{stem}.json"
