"""The idle-session scenario: N SMTP sessions held open against the kubemta ingress after EHLO.

Only the ingress runs (with its own vhost, ready = connected to the broker), with
KUBEMTA_MAX_CONNECTIONS and KUBEMTA_MAX_CONNECTIONS_PER_IP above N. The sessions come
from several loopback source addresses of this run, are opened at most `OPENING` at a
time, each reads the greeting, sends EHLO and reads the reply, then stays idle. The
ingress' VmRSS is read before the first session and 2 s after the last one opened; RSS per
session is the difference divided by the sessions open.
"""

import asyncio
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.latency_probe import expect_reply
from bench.procstats import sum_status_kib
from bench.systems import kubemta

OPENING = 200  # sessions being opened at the same time
SOURCE_ADDRESSES = 4
SETTLE_SECONDS = 2.0


@dataclass
class IdleResult:
    sessions: int
    opened: int
    failed: int
    open_seconds: float
    ingress_processes: int
    rss_before_mib: float
    rss_after_mib: float
    rss_per_session_kib: float | None
    error: str | None = None
    failure_examples: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Session = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(address: str, port: int, source: str, gate: asyncio.Semaphore) -> Session:
    async with gate, asyncio.timeout(60):
        reader, writer = await asyncio.open_connection(address, port, local_addr=(source, 0))
        try:
            await expect_reply(reader, 220, "greeting")
            writer.write(b"EHLO idle.client.bench.test\r\n")
            await expect_reply(reader, 250, "EHLO")
        except BaseException:
            writer.close()
            raise
        return reader, writer


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def measure_idle(config: BenchConfig, workdir: Path, prefix: str, sessions: int) -> IdleResult:
    """Hold `sessions` idle sessions against a fresh ingress; its RSS before and with them."""
    if fd_limit() < sessions + 512:
        return IdleResult(sessions, 0, 0, 0.0, config.ingress_processes, 0.0, 0.0, None, f"RLIMIT_NOFILE {fd_limit()}")
    limits = {
        "KUBEMTA_MAX_CONNECTIONS": str(sessions + 100),
        "KUBEMTA_MAX_CONNECTIONS_PER_IP": str(sessions + 100),
    }
    async with kubemta(
        config, workdir, f"{prefix}.1", transports="", ingress_env=limits, services=("ingress",)
    ) as target:
        pids = target.rss_pids["ingress"]
        await asyncio.sleep(1.0)
        rss_before = sum_status_kib(pids, "VmRSS")
        gate = asyncio.Semaphore(OPENING)
        sources = [f"{prefix}.{10 + index}" for index in range(SOURCE_ADDRESSES)]
        start = time.monotonic()
        outcomes = await asyncio.gather(
            *(_open(target.address, target.port, sources[i % len(sources)], gate) for i in range(sessions)),
            return_exceptions=True,
        )
        open_seconds = time.monotonic() - start
        opened = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
        try:
            await asyncio.sleep(SETTLE_SECONDS)
            target.check()
            rss_after = sum_status_kib(pids, "VmRSS")
        finally:
            for _, writer in opened:
                writer.close()
        per_session = (rss_after - rss_before) / len(opened) if opened else None
        return IdleResult(
            sessions=sessions,
            opened=len(opened),
            failed=len(failures),
            open_seconds=round(open_seconds, 2),
            ingress_processes=config.ingress_processes,
            rss_before_mib=round(rss_before / 1024, 1),
            rss_after_mib=round(rss_after / 1024, 1),
            rss_per_session_kib=None if per_session is None else round(per_session, 1),
            error=f"{len(failures)} sessions failed to open" if failures else None,
            failure_examples=sorted(set(failures))[:5] or None,
        )
