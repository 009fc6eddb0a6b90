"""The four kubemta services as real processes (their console scripts), for end-to-end tests.

Each service gets its own metrics port; the stack waits (bounded) until every one
answers /healthz, offers its Prometheus samples and log lines, and stops every process
by PID (SIGTERM, then SIGKILL after a bound), even when the test failed.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.ports import free_port
from tests.harness.processes import spawn, stop

SERVICES: tuple[str, ...] = ("ingress", "queue-manager", "dns-resolver", "delivery-worker")
"""The services `start()` starts by default. Any other console script `kubemta-<name>` (e.g. "tracker") starts
when named; its listener (KUBEMTA_TRACKER_LISTEN for the tracker) must be set in the stack's environment."""
LISTEN_VARIABLES = {"ingress": "KUBEMTA_SMTP_LISTEN", "tracker": "KUBEMTA_TRACKER_LISTEN"}
BIN = Path(sys.executable).parent


@dataclass
class RunningService:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"


def _http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def _keep_previous(log_path: Path) -> None:
    """Move the log of a service's earlier process (killed or stopped) to `<name>.<n>.log`: `log()` reads the
    running process' log only, and nothing an earlier one wrote is lost."""
    if not log_path.exists():
        return
    n = 1
    while (earlier := log_path.with_suffix(f".{n}.log")).exists():
        n += 1
    log_path.rename(earlier)


class Stack:
    """Starts and stops kubemta service processes with a shared environment."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.services: dict[str, RunningService] = {}
        self.extra_env: dict[str, dict[str, str]] = {}  # per service, as last given to start(): restart() reuses it

    def _environment(self, name: str, metrics_port: int, extra: dict[str, str]) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}
        env.update(self.env)
        env.update(extra)
        env["KUBEMTA_METRICS_LISTEN"] = f"127.0.0.1:{metrics_port}"
        # the ingress API is off unless a test sets it: never the fixed 8080, and one fewer port to race for
        env.setdefault("KUBEMTA_HTTP_LISTEN", "")
        env.setdefault("KUBEMTA_LOG_FORMAT", "json")
        env.setdefault("KUBEMTA_LOG_LEVEL", "DEBUG")
        return env

    async def start(
        self,
        names: tuple[str, ...] = SERVICES,
        extra_env: dict[str, dict[str, str]] | None = None,
        ready: bool = True,
        within: float = 30.0,
    ) -> None:
        """Start the named services; wait until each is healthy (and ready, i.e. connected to the broker)."""
        for name in names:
            port = free_port()
            self.extra_env[name] = dict((extra_env or {}).get(name, self.extra_env.get(name, {})))
            env = self._environment(name, port, self.extra_env[name])
            log_path = self.workdir / f"{name}.log"
            _keep_previous(log_path)
            process = spawn([str(BIN / f"kubemta-{name}")], env=env, log_path=log_path)
            self.services[name] = RunningService(name, process, log_path, port)
        path = "/readyz" if ready else "/healthz"
        async with asyncio.timeout(within):
            for name in names:
                service = self.services[name]
                while True:
                    if service.process.poll() is not None:
                        raise RuntimeError(f"{name} exited with {service.process.returncode}:\n{self.log(name)}")
                    status, _ = await asyncio.to_thread(_http_get, service.base_url + path)
                    if status == 200 and await self._listening(name):
                        break
                    await asyncio.sleep(0.1)

    async def _listening(self, name: str) -> bool:
        """For the ingress (and the tracker): its SMTP (HTTP) listener accepts connections (it may bind after
        /healthz answers)."""
        variable = LISTEN_VARIABLES.get(name, "")
        listen = self.extra_env.get(name, {}).get(variable) or self.env.get(variable, "") if variable else ""
        if not listen:
            return True
        host, _, port = listen.rpartition(":")
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            return False
        writer.close()
        return True

    async def stop(self, name: str | None = None) -> dict[str, int | None]:
        """SIGTERM (then SIGKILL after a bound) the named service, or all at once; returns exit codes."""
        names = [name] if name else list(self.services)
        stopping = [service for each in names if (service := self.services.pop(each, None)) is not None]
        codes = await asyncio.gather(*(asyncio.to_thread(stop, service.process, grace=20.0) for service in stopping))
        return {service.name: code for service, code in zip(stopping, codes, strict=True)}

    async def kill(self, name: str, *, within: float = 10.0) -> int | None:
        """SIGKILL the service's process by its PID (a crash: no drain, nothing flushed) and reap it; returns its
        exit code (None if it did not die within `within` seconds). Its log is kept (see _keep_previous)."""
        service = self.services.pop(name)
        if service.process.poll() is None:
            try:
                os.kill(service.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            return await asyncio.to_thread(service.process.wait, within)
        except subprocess.TimeoutExpired:
            return None

    async def restart(self, name: str, *, ready: bool = True, within: float = 60.0) -> None:
        """Start a killed or stopped service again with the environment it had (a new metrics port)."""
        if name in self.services:
            raise RuntimeError(f"{name} is still running; kill() or stop() it first")
        await self.start((name,), ready=ready, within=within)

    def pid(self, name: str) -> int:
        return self.services[name].process.pid

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_events(self, name: str) -> list[dict[str, object]]:
        """The service's JSON log lines as dicts (other lines skipped)."""
        events = []
        for line in self.log(name).splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    async def http(self, name: str, path: str) -> tuple[int, str]:
        return await asyncio.to_thread(_http_get, self.services[name].base_url + path)

    async def metric(self, name: str, sample: str, **labels: str) -> float:
        """The sum of a service's `sample` series whose labels include `labels` (0 when none): a counter by
        (provider, class) asked by provider alone adds up its classes, as `sum by (provider)` would."""
        status, text = await self.http(name, "/metrics")
        if status != 200:
            raise RuntimeError(f"{name} /metrics answered {status}")
        return sum(
            float(s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )
