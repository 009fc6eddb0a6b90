"""Postfix's `smtp-source` as the load generator: N parallel sessions, M messages of L bytes.

The accepted count is smtp-source's own `-c` counter (incremented each time a DATA command
completes with a positive reply; without -A it stops at the first negative reply), the
wall time is measured from its start to its exit.
"""

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.processes import log_tail

COUNTER = re.compile(rb"(\d+)\r")
SENDER = "bench@client.bench.test"
RECIPIENT = "rcpt@bench.test"


@dataclass(frozen=True)
class SourceResult:
    """One smtp-source run."""

    requested: int
    accepted: int
    wall_seconds: float
    started_at: float  # epoch seconds
    returncode: int
    output_tail: str
    tool: str = "smtp-source"  # what produced it (bench.api_source gives the API's load the same shape)

    @property
    def rate(self) -> float:
        return self.accepted / self.wall_seconds if self.wall_seconds > 0 else 0.0


async def run_source(
    address: str, port: int, *, count: int, size: int, sessions: int, keep_sessions: bool, log_path: Path
) -> SourceResult:
    """Run smtp-source to completion against address:port."""
    argv = ["smtp-source", "-c", "-s", str(sessions), "-l", str(size), "-m", str(count)]
    argv += ["-M", "client.bench.test", "-f", SENDER, "-t", RECIPIENT, "-S", "kubemta bench"]
    if keep_sessions:
        argv.append("-d")
    argv.append(f"{address}:{port}")
    with log_path.open("wb") as log:
        started_at = time.time()
        start = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            returncode = await process.wait()
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        wall = time.monotonic() - start
    return SourceResult(count, _accepted(log_path), wall, started_at, returncode, log_tail(log_path, 600))


def _accepted(log_path: Path) -> int:
    """The last value of smtp-source's -c counter (CR-separated numbers)."""
    counters = COUNTER.findall(log_path.read_bytes()[-4096:] + b"\r")
    return int(counters[-1]) if counters else 0
