"""bench.stages' figures as a text table, Markdown (docs/scale.md's tables) and pods per stage for a target rate.

Pods for 1,000,000 messages per hour (278 msg/s): a pod of a stage runs `processes`
processes and drains, measured, `rate` messages per second; it is planned at no more than
1 / HEADROOM of that (room for bursts, retries and DSNs, and for one pod being replaced),
so pods = ceil(278 x HEADROOM / rate). The broker's figure is its CPU: the stages' broker
CPU ms per message summed, times 278 msg/s x HEADROOM, in cores; and its limit on this
node from the plain publish/consume rates: a message crossing `HOPS` queues costs the
node HOPS x (1/publishes + 1/consumes) seconds.
"""

import math
from collections.abc import Iterable
from typing import Any

TARGET_PER_HOUR = 1_000_000
TARGET = TARGET_PER_HOUR / 3600  # 277.8 msg/s
HEADROOM = 1.5
HOPS = 4  # queues a message crosses on the long path (a domain's first message): inbound, route, deliver, results
SHORT_HOPS = 1  # queues a message to one routed domain crosses on the short path (kubemta_ingress.direct_jobs): deliver
ORDER = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")


def pods(rate: float, *, target: float = TARGET, headroom: float = HEADROOM) -> int | None:
    """Pods of `rate` msg/s each for `target` msg/s, each planned at 1/headroom of its rate."""
    return math.ceil(target * headroom / rate) if rate > 0 else None


def broker_node_rate(publish: float, consume: float, hops: int = HOPS) -> float | None:
    """kubemta messages per second one node takes when each crosses `hops` queues (publish + consume each)."""
    if publish <= 0 or consume <= 0:
        return None
    return 1.0 / (hops * (1.0 / publish + 1.0 / consume))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def stage_rows(stages: Iterable[dict[str, Any]]) -> list[list[str]]:
    """stage, processes, msgs/s, msgs/s per process, CPU ms/msg, broker ms/msg, pods for 1 M/h (or the error)."""
    ordered = sorted(
        stages, key=lambda each: (ORDER.index(each["stage"]), bool(each.get("variant")), each["processes"])
    )
    rows = []
    for each in ordered:
        name = each["stage"] + (f" ({each['variant']})" if each.get("variant") else "")
        if each.get("error"):
            rows.append([name, str(each["processes"]), "failed: " + each["error"][:120], "", "", "", ""])
            continue
        needed = pods(each["rate"])
        rows.append(
            [
                name,
                str(each["processes"]),
                f"{each['rate']:.0f}",
                f"{each['rate_per_process']:.0f}",
                _ms(each["cpu_ms_per_message"]),
                _ms(each["broker_ms_per_message"]),
                "-" if needed is None else str(needed),
            ]
        )
    return rows


STAGE_HEADER = [
    "stage",
    "processes",
    "msgs/s",
    "msgs/s per process",
    "CPU ms/msg (stage)",
    "broker CPU ms/msg",
    f"pods for 1 M/h ({TARGET:.0f} msg/s, x{HEADROOM:g} headroom)",
]
BROKER_HEADER = ["phase", "messages", "msgs/s", "broker CPU ms/msg", "client CPU ms/msg", "connections"]


def broker_rows(phases: Iterable[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for each in phases:
        if each.get("error"):
            rows.append([each["phase"], str(each["messages"]), "failed: " + each["error"][:120], "", "", ""])
            continue
        rows.append(
            [
                each["phase"],
                str(each["messages"]),
                f"{each['rate']:.0f}",
                _ms(each["broker_ms_per_message"]),
                _ms(each["client_ms_per_message"]),
                str(each["clients"]),
            ]
        )
    return rows


def broker_summary(stages: list[dict[str, Any]], phases: list[dict[str, Any]]) -> list[str]:
    """The broker's limit per node and the broker CPU the stages' figures need for 1 M/h, as sentences."""
    lines = []
    rates = {each["phase"]: each["rate"] for each in phases if not each.get("error")}
    node = broker_node_rate(rates.get("publish", 0.0), rates.get("consume", 0.0))
    if node is not None:
        lines.append(
            f"Broker limit on this node: {rates['publish']:.0f} publishes/s with confirms and {rates['consume']:.0f} "
            f"consumes/s with acks (quorum queue, 1 KiB); a message crossing {HOPS} queues: about {node:.0f} msg/s."
        )
        short_path_rate = broker_node_rate(rates["publish"], rates["consume"], SHORT_HOPS)
        lines.append(
            f"A message to one domain the resolver already routed crosses {SHORT_HOPS} queue (`deliver`): about "
            f"{short_path_rate or 0.0:.0f} msg/s."
        )
    cpu = {each["phase"]: each["broker_ms_per_message"] for each in phases if not each.get("error")}
    if cpu.get("publish") and cpu.get("consume"):
        hop = cpu["publish"] + cpu["consume"]
        lines.append(
            f"Broker CPU per queue crossed (publish + consume): {hop:.2f} ms, so {1000 / (HOPS * hop):.0f} msg/s per "
            f"broker core at {HOPS} queues per message (the node's own cost, without kubemta's clients)."
        )
    for processes in sorted({each["processes"] for each in stages}):
        used = [
            each
            for each in stages
            if each["processes"] == processes and not each.get("error") and not each.get("variant")
        ]
        if len(used) == len(ORDER):
            broker_ms = sum(each["broker_ms_per_message"] or 0.0 for each in used)
            service_ms = sum(each["cpu_ms_per_message"] or 0.0 for each in used)
            cores = TARGET * HEADROOM * broker_ms / 1000
            lines.append(
                f"{processes} process(es) per stage: the four stages use {service_ms:.2f} CPU ms per message and the "
                f"broker {broker_ms:.2f}; 1 M/h needs {cores:.1f} broker cores (x{HEADROOM:g} headroom)."
            )
        short = {
            each["stage"]: each
            for each in stages
            if each["processes"] == processes and not each.get("error") and each.get("variant")
        }
        worker = next((each for each in used if each["stage"] == "delivery-worker"), None)
        if "ingress" in short and worker is not None:
            path = (short["ingress"], worker)
            service_ms = sum(each["cpu_ms_per_message"] or 0.0 for each in path)
            broker_ms = sum(each["broker_ms_per_message"] or 0.0 for each in path)
            lines.append(
                f"{processes} process(es) per stage, short path (ingress with the route answers fresh, then the "
                f"worker): {service_ms:.2f} CPU ms per message and the broker {broker_ms:.2f}."
            )
    return lines


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    return lines + ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def render(document: dict[str, Any], *, markdown: bool) -> str:
    """The stage table, the broker table and the summary sentences of a bench.stages result document."""
    table = markdown_table if markdown else text_table
    stages, phases = document["stages"], document["broker"]
    lines = [document["title"], ""]
    lines += table(STAGE_HEADER, stage_rows(stages))
    lines += ["", "The broker alone (quorum queue, persistent 1 KiB messages):", ""]
    lines += table(BROKER_HEADER, broker_rows(phases))
    lines += ["", *broker_summary(stages, phases)]
    busy = [each for each in [*stages, *phases] if each.get("settled") and not each["settled"]["quiet"]]
    if busy:
        lines.append(f"{len(busy)} measurement(s) started on a busy machine (the CPUs not idle within the bound).")
    return "\n".join(lines) + "\n"
