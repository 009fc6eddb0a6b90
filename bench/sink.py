"""Postfix's `smtp-sink` as the destination of every system, counting and timestamping what arrives.

- Count: `-c` makes smtp-sink print running counters (`sess=N quit=N mesg=N`, separated by
  CR) each time a session ends, QUIT or "." is received; stdout goes to a file whose tail
  is polled. `mesg` is the number of messages whose final "." it received.
- Arrival times: `-d DIR/%H%M%S.` dumps each message to its own file on tmpfs (/dev/shm);
  the file is written as the message arrives, so its mtime is the arrival of the final
  "." (as fine as the kernel's file timestamps: well under 1 ms on tmpfs with Linux 6.18,
  one jiffy on kernels stamping files with the coarse clock). The latency probe's
  messages are found by their recipient
  (`X-Rcpt-Args: <probe-...>` at the top of each dump).
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.harness.ports import wait_for_port
from tests.harness.processes import log_tail, spawn, stop

MESG = re.compile(rb"mesg=(\d+)")
PROBE_RCPT = re.compile(rb"X-Rcpt-Args: <probe-([0-9a-z-]+)@")
DUMP_ROOT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


@dataclass(frozen=True)
class DumpScan:
    """What the dumps of one run hold."""

    load_messages: int  # smtp-source's
    probe_messages: int  # the latency probe's
    last_load_arrival: float | None  # epoch seconds
    probe_arrivals: dict[str, float]  # probe id -> epoch seconds


class Sink:
    """One smtp-sink process on address:port with its counter file and dump directory."""

    def __init__(self, workdir: Path, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.counter_path = workdir / "smtp-sink.out"
        self.dumps = Path(tempfile.mkdtemp(prefix="kubemta-bench-dumps-", dir=DUMP_ROOT))
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        argv = ["smtp-sink", "-c", "-h", "sink.bench.test", "-d", f"{self.dumps}/%H%M%S."]
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root: it drops to `nobody` after binding, so the dumps must be theirs.
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dumps, nobody.pw_uid, nobody.pw_gid)
            argv += ["-u", "nobody"]
        argv += [f"{self.address}:{self.port}", "1024"]
        self.process = spawn(argv, log_path=self.counter_path)
        try:
            await wait_for_port(self.address, self.port, within=10, what="smtp-sink")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}: {log_tail(self.counter_path)}") from None

    def messages(self) -> int:
        """Messages received so far (the last `mesg=` counter)."""
        try:
            with self.counter_path.open("rb") as out:
                out.seek(max(0, out.seek(0, os.SEEK_END) - 256))
                found = MESG.findall(out.read())
        except OSError:
            return 0
        return int(found[-1]) if found else 0

    def _dump_files(self) -> Iterator[os.DirEntry[str]]:
        with os.scandir(self.dumps) as entries:
            yield from (entry for entry in entries if entry.is_file())

    def scan(self) -> DumpScan:
        """Count the dumped messages (load and probe apart) and read their arrival times."""
        load = probes = 0
        last_load: int | None = None
        arrivals: dict[str, float] = {}
        for entry in self._dump_files():
            with open(entry.path, "rb") as dump:
                match = PROBE_RCPT.search(dump.read(1024))
            arrived = entry.stat().st_mtime_ns
            if match:  # a duplicate (at-least-once delivery) counts by its first arrival
                probes += 1
                probe = match.group(1).decode()
                arrivals[probe] = min(arrived / 1e9, arrivals.get(probe, arrived / 1e9))
            else:
                load += 1
                last_load = arrived if last_load is None else max(last_load, arrived)
        return DumpScan(load, probes, None if last_load is None else last_load / 1e9, arrivals)

    def clear_dumps(self) -> None:
        for entry in self._dump_files():
            os.unlink(entry.path)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, grace=5)
            self.process = None
        shutil.rmtree(self.dumps, ignore_errors=True)
