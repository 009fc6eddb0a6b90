"""The results as Markdown tables (for the README), from a result JSON file.

Written as `bench/results/<timestamp>.md` and `latest.md` by every run;
`python -m bench.markdown bench/results/latest.json` renders one again.
"""

import json
import sys
from pathlib import Path
from typing import Any

from bench import route_paths
from bench.config import kubemta_env_text
from bench.machine import python_text

FIGURES = ("accepted_rate", "delivered_rate", "accept_p50_ms", "accept_p99_ms", "e2e_p50_ms", "e2e_p99_ms")
HEADINGS = ("accepted msg/s", "delivered msg/s", "accept p50 ms", "accept p99 ms", "e2e p50 ms", "e2e p99 ms")
KUBEMTA_CPU = ("ingress", "queue-manager", "dns-resolver", "delivery-worker", "services total", "rabbitmq", "total")
CPU_HEADINGS = ("ingress", "queue-manager", "dns-resolver", "delivery-worker", "4 services", "RabbitMQ", "total")
SERVICES = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
KUBEMTA_SYSTEMS = ("kubemta", "kubemta-api")  # SMTP, and the HTTP sending API (POST /v1/messages)


def _number(value: float) -> str:
    """Three significant figures or so, by magnitude (an e2e latency can be negative)."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cell(value: dict[str, Any] | None) -> str:
    if not value:
        return "–"
    if value["n"] == 1 or value["min"] == value["max"]:
        return _number(value["median"])
    return f"{_number(value['median'])} [{_number(value['min'])}–{_number(value['max'])}]"


def _processes(config: dict[str, Any]) -> str:
    """`processes per stage: ingress 1, queue-manager 2, ...`; results from before BENCH_PROCESSES name the ingress."""
    counts = config.get("processes")
    if not counts:
        return f"{config['ingress_processes']} ingress process(es)"
    return "processes per stage: " + ", ".join(f"{service} {number}" for service, number in counts.items())


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ratio_line(ratios: dict[str, dict[str, float | None]], what: str) -> list[str]:
    """`what (medians): 1 KiB: accepted 0.36×, delivered 0.40×; ...`, or nothing without ratios."""
    shown = "; ".join(
        f"{_size(int(size))}: accepted {values['accepted_rate']:.2f}×, delivered {values['delivered_rate']:.2f}×"
        for size, values in ratios.items()
        if values.get("accepted_rate") is not None and values.get("delivered_rate") is not None
    )
    return ["", f"{what} (medians): {shown}."] if shown else []


def _paired_line(paired: dict[str, dict[str, dict[str, Any] | None]]) -> list[str]:
    """`kubemta / Postfix per repetition ...: 1 KiB: delivered 1.03× [0.98–1.05], CPU per message 0.97× [...]`."""
    shown = "; ".join(
        f"{_size(int(size))}: delivered {_times(values.get('delivered_rate'))}, "
        f"CPU per message {_times(values.get('cpu_per_message'))}"
        for size, values in paired.items()
    )
    what = "kubemta / Postfix per repetition (the two runs of a repetition ran back to back), median [min–max]"
    return ["", f"{what}: {shown}."] if shown else []


def _times(value: dict[str, Any] | None) -> str:
    if not value:
        return "–"
    if value["n"] == 1 or value["min"] == value["max"]:
        return f"{value['median']:.2f}×"
    return f"{value['median']:.2f}× [{value['min']:.2f}–{value['max']:.2f}]"


def _paths_line(runs: list[dict[str, Any]], sizes: list[int]) -> list[str]:
    """Each kubemta run's share of first attempts the ingress sent straight to `deliver` (bench.route_paths), in the
    order of the runs; nothing for result files from before the counts were read."""
    parts = []
    for size in sizes:
        for name in KUBEMTA_SYSTEMS:
            shown = [
                route_paths.run_text(run["route_answers"])
                for run in runs
                if run["system"] == name and run["size"] == size and run.get("route_answers")
            ]
            if shown:
                parts.append(f"{name} {_size(size)}: {', '.join(shown)}")
    if not parts:
        return []
    heading = (
        "First attempts the ingress sent straight to `deliver` (the short path; the rest went through `inbound`, and "
        "why: `kubemta_route_answers_total`), per run: "
    )
    return ["", heading + "; ".join(parts) + "."]


def render(document: dict[str, Any]) -> str:
    config, machine, summary = document["config"], document["machine"], document["summary"]
    sizes, systems = config["sizes"], config["systems"]
    mode = "several messages per connection" if config["keep_sessions"] else "one message per connection"
    api = f" (kubemta-api: {config['sessions']} HTTP API clients, keep-alive)" if "kubemta-api" in systems else ""
    lines = [
        f"Measured {document['started'][:16].replace('T', ' ')} UTC on {machine['nproc']} × {machine['cpu_model']}, "
        f"{machine['mem_total_gib']} GiB RAM, Linux {machine['kernel']} (load average at start "
        f"{'/'.join(f'{value:.1f}' for value in machine['load_average_at_start'])}); Postfix {machine['postfix']}, "
        f"RabbitMQ {machine['rabbitmq']}, {python_text(machine)}. "
        f"{config['sessions']} smtp-source sessions, "
        f"{mode}{api}; median [min–max] of {config['repetitions']} runs of ≥ {config['duration']:.0f} s; kubemta log "
        f"level {config['kubemta_log_level']}, {_processes(config)}{kubemta_env_text(config.get('kubemta_env', {}))}. "
        f"The run took {document['elapsed_seconds'] / 60:.0f} min.",
        "",
    ]
    rows = []
    for size in sizes:
        for name in systems:
            entry = summary.get(f"{size}/{name}")
            if entry:
                failed = f" ({entry['failed']} of {entry['runs']} runs failed)" if entry["failed"] else ""
                rows.append([_size(size), name + failed, *(_cell(entry[figure]) for figure in FIGURES)])
    lines += _table(["size", "system", *HEADINGS], rows)
    spreads = [
        f"{name} {_size(int(size))} {entry['spread_pct']['delivered_rate']:g}%"
        for key, entry in summary.items()
        for size, _, name in [key.partition("/")]
        if entry.get("spread_pct", {}).get("delivered_rate") is not None
    ]
    if spreads:
        lines += ["", "Spread of delivered msg/s between runs ((max − min) / median): " + "; ".join(spreads) + "."]
    lines += _ratio_line(document.get("ratio_kubemta_to_postfix", {}), "kubemta / Postfix")
    lines += _paired_line(document.get("paired_ratio_kubemta_to_postfix", {}))
    lines += _ratio_line(document.get("ratio_api_to_smtp", {}), "kubemta HTTP API / kubemta SMTP")
    cpu_rows, rss_rows, source_cpu = [], [], []
    for size in sizes:
        for name in KUBEMTA_SYSTEMS:
            ours = summary.get(f"{size}/{name}")
            if ours:
                cpu = ours["cpu_per_1000"]
                cpu_rows.append([_size(size), name, *(_cell(cpu.get(key)) for key in KUBEMTA_CPU)])
                rss_rows.append([_size(size), name, *(_cell(ours["peak_rss_mib"].get(key)) for key in SERVICES)])
                if ours.get("source_cpu_per_1000"):
                    source_cpu.append(f"{_size(size)} {_cell(ours['source_cpu_per_1000'])}")
        theirs = summary.get(f"{size}/postfix")
        if theirs:
            postfix_cpu = _cell(theirs["cpu_per_1000"].get("postfix"))
            cpu_rows.append([_size(size), "postfix (all daemons)", *("–" for _ in KUBEMTA_CPU[:-1]), postfix_cpu])
    if cpu_rows:
        lines += ["", "CPU seconds per 1,000 messages delivered (= CPU ms per message):", ""]
        lines += _table(["size", "system", *CPU_HEADINGS], cpu_rows)
    lines += _paths_line(document.get("runs", []), sizes)
    if source_cpu:
        lines += [
            "",
            "The HTTP API's load source itself (Python and httpx in the benchmark's process, not in kubemta's total; "
            f"smtp-source's CPU is not measured): {'; '.join(source_cpu)} CPU s per 1,000 messages.",
        ]
    if rss_rows:
        lines += ["", "Peak RSS of the kubemta services (VmHWM, MiB):", ""]
        lines += _table(["size", "system", *SERVICES], rss_rows)
    idle = document.get("idle_sessions", [])
    if idle:
        lines += ["", "Idle SMTP sessions held open against the ingress (after EHLO):", ""]
        idle_rows = [
            [
                f"{result['sessions']:,}",
                f"{result['opened']:,}",
                f"{result['rss_before_mib']:.1f}",
                f"{result['rss_after_mib']:.1f}",
                "–" if result["rss_per_session_kib"] is None else f"{result['rss_per_session_kib']:.1f}",
            ]
            for result in idle
        ]
        lines += _table(["sessions", "open", "ingress RSS before, MiB", "with them, MiB", "KiB per session"], idle_rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m bench.markdown bench/results/latest.json\n")
        return 2
    sys.stdout.write(render(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
