"""The figures of a chaos run, counted from what the clients saw and what the sink received, and their tables."""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.chaos.monkey import ChaosLog
from bench.chaos.senders import Letter, SendStats
from tests.harness.mail_sink import MailSink

DUPLICATE_GOAL = 0.01  # issue 14: kill -9 of any one service with 200 messages in flight -> at most 1% twice


@dataclass
class ChaosResult:
    mode: str  # "full", "quick" or "kill-one <service>"
    messages: int
    clients: int
    tracker: bool
    accepted: int = 0  # messages that got a 250
    refused: int = 0  # a 5xx (final)
    gave_up: int = 0  # the client stopped retrying
    delivered: int = 0  # accepted messages that reached the sink (each counted once)
    lost: list[str] = field(default_factory=list)  # Message-IDs accepted but never delivered
    duplicates: int = 0  # deliveries beyond the first, of every message of the run
    duplicated: list[str] = field(default_factory=list)  # Message-IDs delivered more than once
    delivered_unaccepted: int = 0  # messages whose client gave up or was refused, delivered all the same
    other_deliveries: int = 0  # messages the run did not send (DSNs, delay warnings)
    client_retried: int = 0  # messages a client had to send more than once
    client_failures: dict[str, int] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    broker_restarts: int = 0
    exited: list[str] = field(default_factory=list)  # services found dead at the end that were not killed
    guards: dict[str, int] = field(default_factory=dict)  # duplicate events in the logs, by "service reason"
    error_lines: dict[str, int] = field(default_factory=dict)  # ERROR log lines by service
    causes: dict[str, int] = field(default_factory=dict)  # duplicated messages by cause (explain.py)
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    wall_seconds: float = 0.0
    steps: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def duplicate_share(self) -> float:
        return self.duplicates / self.delivered if self.delivered else 0.0

    @property
    def ok(self) -> bool:
        return not self.lost


def tally(result: ChaosResult, mail: list[Letter], stats: SendStats, sink: MailSink, chaos: ChaosLog) -> None:
    """Fill `result` from the clients' view, the sink's counts and the chaos log."""
    sent = {letter.message_id for letter in mail}
    deliveries = Counter(sink.deliveries)
    result.accepted = len(stats.accepted)
    result.refused = len(stats.refused)
    result.gave_up = len(stats.gave_up)
    result.delivered = sum(1 for message_id in stats.accepted if deliveries[message_id] > 0)
    result.lost = sorted(message_id for message_id in stats.accepted if deliveries[message_id] == 0)
    result.duplicated = sorted(message_id for message_id in sent if deliveries[message_id] > 1)
    result.duplicates = sum(deliveries[message_id] - 1 for message_id in result.duplicated)
    result.delivered_unaccepted = sum(
        1 for message_id in sent if message_id not in stats.accepted and deliveries[message_id] > 0
    )
    result.other_deliveries = sum(count for message_id, count in deliveries.items() if message_id not in sent)
    result.client_retried = stats.retried
    result.client_failures = dict(stats.failures.most_common())
    result.kills = dict(sorted(chaos.kills.items()))
    result.broker_restarts = chaos.broker_restarts
    result.steps = list(chaos.steps)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def one_table(result: ChaosResult) -> str:
    """The figures of one run, one per line."""
    share = f"{result.duplicates} ({100 * result.duplicate_share:.1f}% of delivered)"
    rows = [
        ["mode", result.mode],
        ["messages sent", f"{result.messages} by {result.clients} clients"],
        ["tracker", "running" if result.tracker else "not running (no duplicate checks)"],
        ["accepted (250)", str(result.accepted)],
        ["refused (5xx)", str(result.refused)],
        ["given up by the client", str(result.gave_up)],
        ["delivered (unique)", str(result.delivered)],
        ["LOST", str(len(result.lost))],
        ["duplicates", share],
        ["messages delivered twice+", str(len(result.duplicated))],
        *([["  why (tracker)", f"{cause}: {n}"] for cause, n in result.causes.items()]),
        ["delivered, not accepted", str(result.delivered_unaccepted)],
        ["other deliveries (DSNs)", str(result.other_deliveries)],
        ["client retries (messages)", str(result.client_retried)],
        ["client failures", ", ".join(f"{kind} {n}" for kind, n in result.client_failures.items()) or "none"],
        ["kills (kill -9)", ", ".join(f"{name} {n}" for name, n in result.kills.items()) or "none"],
        ["broker restarts", str(result.broker_restarts)],
        ["services dead at the end", ", ".join(result.exited) or "none"],
        ["duplicates stopped (log)", ", ".join(f"{key} {n}" for key, n in result.guards.items()) or "none"],
        ["ERROR log lines", ", ".join(f"{name} {n}" for name, n in result.error_lines.items()) or "none"],
        ["wall time", f"{result.wall_seconds:.1f} s (sending and chaos {result.send_seconds:.1f} s, "
         f"waiting for deliveries {result.drain_seconds:.1f} s)"],
    ]  # fmt: skip
    table = _table(["figure", "value"], rows)
    if result.lost:
        table += "\nlost Message-IDs: " + " ".join(result.lost[:50]) + (" ..." if len(result.lost) > 50 else "")
    return table


def each_table(results: list[ChaosResult]) -> str:
    """kill-one runs, a row per run; with several runs of a service, a row adding them up."""
    header = ["killed", "accepted", "delivered", "lost", "duplicates", "dup %", "goal", "client retries",
              "duplicates stopped", "why (tracker)", "wall s"]  # fmt: skip
    rows = []
    for r in results:
        rows.append(_each_row(r.mode.removeprefix("kill-one "), [r]))
    services = list(dict.fromkeys(r.mode for r in results if not r.skipped))
    for mode in services:
        runs = [r for r in results if r.mode == mode]
        if len(runs) > 1:
            rows.append(_each_row(f"{mode.removeprefix('kill-one ')} ({len(runs)} runs)", runs))
    return _table(header, rows)


def _each_row(label: str, runs: list[ChaosResult]) -> list[str]:
    if any(r.skipped for r in runs):
        return [label, "-", "-", "-", "-", "-", runs[0].skipped, "-", "-", "-", "-"]
    accepted = sum(r.accepted for r in runs)
    delivered = sum(r.delivered for r in runs)
    lost = sum(len(r.lost) for r in runs)
    duplicates = sum(r.duplicates for r in runs)
    share = duplicates / delivered if delivered else 0.0
    guards: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for r in runs:
        guards.update(r.guards)
        causes.update(r.causes)
    goal = "met" if not lost and share <= DUPLICATE_GOAL else "NOT met"
    return [
        label, str(accepted), str(delivered), str(lost), str(duplicates), f"{100 * share:.1f}", goal,
        str(sum(r.client_retried for r in runs)), ", ".join(f"{key} {n}" for key, n in sorted(guards.items())) or "0",
        "; ".join(f"{cause} {n}" for cause, n in causes.most_common()) or "-",
        f"{sum(r.wall_seconds for r in runs):.0f}",
    ]  # fmt: skip


def write_json(path: Path, results: list[ChaosResult]) -> None:
    path.write_text(json.dumps([asdict(result) for result in results], indent=2) + "\n")
