"""CPU time and memory of process trees, read from /proc (Linux).

CPU is utime+stime of every live process of a tree plus cutime+cstime (children that
exited and were reaped), so the difference of two readings is the CPU the tree used in
between, even when children came and went (Postfix's daemons do).
"""

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, `state`)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children = _children()
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """CPU seconds (user+system, including reaped children) of the process trees under `roots`."""
    ticks = 0
    for root in roots:
        for pid in tree(root):
            fields = _stat_fields(pid)
            if fields is not None:
                ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` value of /proc/<pid>/status, e.g. VmRSS (resident now) or VmHWM (peak resident)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def sum_status_kib(pids: list[int], key: str) -> int:
    """The sum of one /proc status value over processes (missing ones count 0)."""
    return sum(status_kib(pid, key) or 0 for pid in pids)
