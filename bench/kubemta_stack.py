"""kubemta's four services as processes (the console scripts in .venv/bin), as `make run` starts them.

Each service gets its own metrics port; the stack waits (bounded) until every process
answers /readyz with 200 (connected to the broker), and stops them by PID (SIGTERM, then
SIGKILL after a bound). Each service runs as many processes as `processes` says (the
bench's BENCH_PROCESSES); with more than one ingress process they share the SMTP port
through KUBEMTA_SMTP_REUSE_PORT=true (SO_REUSEPORT), which only then is set. The other
services' processes are competing consumers of their queues, as replicas in Kubernetes are.
"""

import asyncio
import functools
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.harness.ports import free_port
from tests.harness.processes import log_tail, spawn, stop

SERVICES: tuple[str, ...] = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
BIN = Path(sys.executable).parent
LISTEN_DEFAULT = re.compile(r"^\s*(KUBEMTA_[A-Z_]+_LISTEN) \(default: ([^)]*)\)", re.MULTILINE)
FIXED_LISTENERS = {"KUBEMTA_SMTP_LISTEN", "KUBEMTA_METRICS_LISTEN"}
STOP_GRACE = 40.0  # seconds; above KUBEMTA_DRAIN_SECONDS' default (30s)


@dataclass
class ServiceProcess:
    service: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int
    listeners: dict[str, str]  # KUBEMTA_*_LISTEN -> host:port, as the process was given them


@functools.cache
def other_listeners(service: str) -> tuple[str, ...]:
    """The service's `KUBEMTA_*_LISTEN` variables that listen by default, other than SMTP and metrics.

    Read from `kubemta-<service> --help`, so a listener added later (e.g. the ingress' HTTP
    API on 127.0.0.1:8080) gets a free port of its own instead of colliding with a fixed one.
    """
    result = subprocess.run(
        [str(BIN / f"kubemta-{service}"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    found = LISTEN_DEFAULT.findall(result.stdout)
    return tuple(name for name, default in found if default not in ("", "(empty") and name not in FIXED_LISTENERS)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class KubemtaStack:
    """The services of one run, configured through KUBEMTA_* variables."""

    def __init__(
        self,
        workdir: Path,
        *,
        amqp_url: str,
        smtp_address: str,
        smtp_port: int,
        transports: str,
        log_level: str,
        ingress_processes: int = 1,
        services: tuple[str, ...] = SERVICES,
        ingress_env: dict[str, str] | None = None,
        processes: Mapping[str, int] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.services = services
        self.counts = {service: 1 for service in services}
        self.counts["ingress"] = ingress_processes
        self.counts.update(processes or {})
        self.ingress_processes = self.counts["ingress"]
        self.ingress_env = ingress_env or {}
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}
        self.env.update(
            KUBEMTA_AMQP_URL=amqp_url,
            KUBEMTA_HOSTNAME="mta.bench.test",
            KUBEMTA_SMTP_LISTEN=f"{smtp_address}:{smtp_port}",
            KUBEMTA_RELAY_NETWORKS="127.0.0.0/8",
            KUBEMTA_TRANSPORTS=transports,
            KUBEMTA_LOG_FORMAT="json",
            KUBEMTA_LOG_LEVEL=log_level,
        )
        self.env.update(extra_env or {})
        self.processes: list[ServiceProcess] = []

    def _spawn(self, service: str, index: int) -> None:
        port = free_port("127.0.0.1")
        env = dict(self.env, KUBEMTA_METRICS_LISTEN=f"127.0.0.1:{port}")
        for variable in other_listeners(service):
            env[variable] = f"127.0.0.1:{free_port('127.0.0.1')}"
        if service == "ingress":
            env.update(self.ingress_env)
            if self.ingress_processes > 1:
                env["KUBEMTA_SMTP_REUSE_PORT"] = "true"
        log_path = self.workdir / f"{service}-{index}.log"
        process = spawn([str(BIN / f"kubemta-{service}")], env=env, log_path=log_path)
        listeners = {name: value for name, value in env.items() if name.endswith("_LISTEN")}
        self.processes.append(ServiceProcess(service, process, log_path, port, listeners))

    async def start(self, within: float = 60.0) -> None:
        """Start every service process and wait until each answers /readyz with 200."""
        for service in self.services:
            for index in range(self.counts.get(service, 1)):
                self._spawn(service, index)
        try:
            async with asyncio.timeout(within):
                for each in self.processes:
                    while not await asyncio.to_thread(_ready, each.metrics_port):
                        if each.process.poll() is not None:
                            raise RuntimeError(
                                f"kubemta-{each.service} exited {each.process.returncode}: {log_tail(each.log_path)}"
                            )
                        await asyncio.sleep(0.1)
        except TimeoutError:
            late = [each.service for each in self.processes if not _ready(each.metrics_port)]
            raise RuntimeError(f"kubemta services not ready within {within:.0f} s: {late}") from None

    def pids(self) -> dict[str, list[int]]:
        """Service name -> PIDs of its processes."""
        return self._per_service(lambda each: each.process.pid)

    def metrics_ports(self) -> dict[str, list[int]]:
        """Service name -> the metrics ports of its processes."""
        return self._per_service(lambda each: each.metrics_port)

    def _per_service(self, value: Callable[[ServiceProcess], int]) -> dict[str, list[int]]:
        """Service name -> `value` of each of its processes, in the order they were started."""
        found: dict[str, list[int]] = {}
        for each in self.processes:
            found.setdefault(each.service, []).append(value(each))
        return found

    def listening(self, service: str, variable: str) -> list[str]:
        """The host:port each process of `service` was given in `variable` (e.g. the ingress' KUBEMTA_HTTP_LISTEN)."""
        return [
            each.listeners[variable]
            for each in self.processes
            if each.service == service and each.listeners.get(variable)
        ]

    def check_alive(self) -> None:
        for each in self.processes:
            if each.process.poll() is not None:
                raise RuntimeError(
                    f"kubemta-{each.service} exited {each.process.returncode}: {log_tail(each.log_path)}"
                )

    def stop(self) -> None:
        """Stop every process by PID, all at the same time (each SIGTERM, then SIGKILL after a bound)."""
        processes, self.processes = self.processes, []
        with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
            list(pool.map(lambda each: stop(each.process, grace=STOP_GRACE), processes))
