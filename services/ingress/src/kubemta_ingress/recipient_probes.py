"""LMTP recipient probes with a cache, a bound on concurrency and a time limit (lmtp_probe.py does one probe).

- Cache: answers are kept per (next hop, address): a known recipient for
  `KUBEMTA_RECIPIENT_VERIFY_POSITIVE_TTL`, an unknown one for
  `KUBEMTA_RECIPIENT_VERIFY_NEGATIVE_TTL` (so a dictionary attack that repeats itself
  costs the mailbox server nothing more), at most `KUBEMTA_RECIPIENT_VERIFY_CACHE_SIZE`
  entries, least recently used evicted first. A temporary failure is never cached. The
  address's domain is compared in its canonical form; its local part exactly as sent
  (the mailbox server decides whether case matters).
- Coalescing: sessions asking about the same address at the same time share one probe.
- Concurrency: at most `KUBEMTA_RECIPIENT_VERIFY_CONCURRENCY` probes run at once per
  process; more wait for a slot.
- Time: each verification, the wait for a slot included, ends within
  `KUBEMTA_RECIPIENT_VERIFY_TIMEOUT` with an answer; what runs out of time is a
  temporary failure (the client gets `450 4.1.1` and retries), never a hang.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubemta_common.metrics import preinitialise
from kubemta_common.transport_map import Nexthop
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_ingress import metrics
from kubemta_ingress.lmtp_connect import LmtpConnector, Unreachable, os_reason
from kubemta_ingress.lmtp_probe import ProbeResult, ProbeStatus, ProtocolError, probe, rcpt_command

logger = logging.getLogger(__name__)
preinitialise(metrics.RECIPIENT_PROBES, result=[status.value for status in ProbeStatus])

type ProbeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """The prober's bounds (`KUBEMTA_RECIPIENT_VERIFY_*`)."""

    timeout: float = 10.0
    concurrency: int = 20
    positive_ttl: float = 3600.0
    negative_ttl: float = 600.0
    cache_size: int = 10000


class RecipientProber:
    """Answers "does the LMTP server at this next hop take this address?", cached and bounded."""

    def __init__(
        self,
        connector: LmtpConnector,
        *,
        helo: str,
        limits: ProbeLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connector = connector
        self._helo = helo
        self._limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)
        self._cache: TtlLruCache[ProbeKey, ProbeResult] = TtlLruCache(limits.cache_size, clock)
        self._running: dict[ProbeKey, asyncio.Task[ProbeResult]] = {}
        self.in_progress = 0
        """Probes holding a slot now (talking to a mailbox server)."""
        self.waiting = 0
        """Probes waiting for a slot now."""

    async def check(self, nexthop: Nexthop, address: str) -> ProbeResult:
        """The mailbox server's answer for `address` (validated with lmtp_probe.rcpt_command first)."""
        rcpt_command(address)  # UnsendableAddress before anything is cached, shared or sent
        key = (str(nexthop), address)
        cached = self._cache.get(key)
        if cached is not None:
            metrics.RECIPIENT_PROBE_CACHE_HITS.inc()
            return cached
        task = self._running.get(key)
        if task is None:
            task = asyncio.create_task(self._probe(key, nexthop, address))
            self._running[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        try:
            async with asyncio.timeout(self._limits.timeout):
                return await asyncio.shield(task)  # a session that goes away leaves the probe to the others
        except TimeoutError:
            return ProbeResult(ProbeStatus.TEMPFAIL, f"verification timed out after {self._limits.timeout:g}s")
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this session is cancelled, not only the probe
            return ProbeResult(ProbeStatus.TEMPFAIL, "verification stopped: the service is shutting down")

    def _forget(self, key: ProbeKey, task: asyncio.Task[ProbeResult]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def _probe(self, key: ProbeKey, nexthop: Nexthop, address: str) -> ProbeResult:
        result = await self._bounded_probe(nexthop, address)
        metrics.RECIPIENT_PROBES.labels(result=result.status.value).inc()
        if result.status is ProbeStatus.KNOWN:
            self._cache.put(key, result, self._limits.positive_ttl)
        elif result.status is ProbeStatus.UNKNOWN:
            self._cache.put(key, result, self._limits.negative_ttl)
        else:
            logger.warning("recipient verification failed: %s", result.detail, extra={"nexthop": key[0]})
        return result

    async def _bounded_probe(self, nexthop: Nexthop, address: str) -> ProbeResult:
        slot = False
        try:
            async with asyncio.timeout(self._limits.timeout):
                self.waiting += 1
                try:
                    await self._slots.acquire()
                finally:
                    self.waiting -= 1
                slot = True
                self.in_progress += 1
                return await self._talk(nexthop, address)
        except TimeoutError:
            if not slot:
                busy = self._limits.concurrency
                detail = f"too many verifications in progress (KUBEMTA_RECIPIENT_VERIFY_CONCURRENCY {busy})"
                return ProbeResult(ProbeStatus.TEMPFAIL, detail)
            return ProbeResult(ProbeStatus.TEMPFAIL, f"conversation with {nexthop} timed out")
        finally:
            if slot:
                self.in_progress -= 1
                self._slots.release()

    async def _talk(self, nexthop: Nexthop, address: str) -> ProbeResult:
        try:
            connection = await self._connector.connect(nexthop)
        except Unreachable as exc:
            return ProbeResult(ProbeStatus.TEMPFAIL, str(exc))
        try:
            return await probe(connection.reader, connection.writer, address, helo=self._helo, server=connection.server)
        except ProtocolError as exc:
            return ProbeResult(ProbeStatus.TEMPFAIL, f"host {connection.server}: {exc}")
        except OSError as exc:
            return ProbeResult(ProbeStatus.TEMPFAIL, f"host {connection.server}: {os_reason(exc)}")
        finally:
            await connection.close()

    async def close(self) -> None:
        """Cancel the probes still running (at shutdown)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
