"""Before a measured run: wait (bounded) until the machine is quiet, and say how quiet it got.

Runs differed for reasons of their own: the previous run's vhost still being torn down in
the broker (quorum queues' Ra servers, WAL and segment files), its processes still exiting,
or other work on the machine. Before each run this waits until the CPUs were idle for
`IDLE_FRACTION` of each of `QUIET_SECONDS` consecutive one-second samples of /proc/stat,
for at most the bench's BENCH_SETTLE_TIMEOUT; the result (how long it waited, the idle
fraction reached, the load average) goes into the run's figures, so a run measured on a
busy machine is visible as such instead of being silently slower.
"""

import asyncio
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

IDLE_FRACTION = 0.85  # of all CPUs, per one-second sample
QUIET_SECONDS = 2  # consecutive quiet samples
SAMPLE_SECONDS = 1.0
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Settled:
    """What the wait before one run found."""

    waited_seconds: float
    idle_fraction: float  # of the last sample
    quiet: bool  # False: the bound ran out first
    load_average: tuple[float, float, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cpu_times(text: str | None = None) -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs from /proc/stat's `cpu` line (idle includes iowait)."""
    line = (text if text is not None else PROC_STAT.read_text()).splitlines()[0]
    values = [int(value) for value in line.split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return idle, sum(values[:8])


def idle_between(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The idle fraction of the CPUs between two `cpu_times` readings (1.0 when no time passed)."""
    total = after[1] - before[1]
    return 1.0 if total <= 0 else (after[0] - before[0]) / total


async def settle(bound: float, *, idle_fraction: float = IDLE_FRACTION, quiet_seconds: int = QUIET_SECONDS) -> Settled:
    """Wait until `quiet_seconds` consecutive samples were at least `idle_fraction` idle, at most `bound` seconds
    (0: not at all)."""
    start = time.monotonic()
    quiet_samples = 0
    fraction = 1.0
    while bound > 0:
        before = cpu_times()
        await asyncio.sleep(SAMPLE_SECONDS)
        fraction = idle_between(before, cpu_times())
        quiet_samples = quiet_samples + 1 if fraction >= idle_fraction else 0
        if quiet_samples >= quiet_seconds:
            break
        if time.monotonic() - start >= bound:
            break
    waited = time.monotonic() - start
    quiet = bound <= 0 or quiet_samples >= quiet_seconds
    load = os.getloadavg()
    return Settled(round(waited, 1), round(fraction, 3), quiet, (load[0], load[1], load[2]))
