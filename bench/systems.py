"""The systems under test: kubemta (RabbitMQ + four services), a private Postfix, or the sink itself.

Each is an async context manager yielding where smtp-source sends to and which processes
to account CPU and memory to; leaving it stops everything it started, also on errors
and cancellation (Ctrl-C). `kubemta-api` is the same kubemta stack loaded through its HTTP
sending API instead (bench.api_source): an API key for the load's sender domain is made
with `kubemta-admin api-keys create` into a keys file of the run (KUBEMTA_API_KEYS_FILE).
"""

import asyncio
import functools
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import rabbitmq, route_paths
from bench.api_source import ApiEndpoint
from bench.config import BenchConfig
from bench.kubemta_stack import BIN, SERVICES, KubemtaStack
from bench.postfix import PostfixInstance
from bench.sink import Sink
from bench.source import SENDER
from tests.harness.ports import free_port, wait_for_port

DOMAIN = "bench.test"
API_KEY_NAME = "bench"
HTTP_LISTEN = "KUBEMTA_HTTP_LISTEN"


def transport_to(sink: Sink) -> str:
    """bench.test's static route to the sink, in Postfix's (and kubemta's) next-hop syntax."""
    return f"{DOMAIN}=smtp:[{sink.address}]:{sink.port}"


@dataclass
class SystemUnderTest:
    """Where the load goes, and the processes its CPU (and peak RSS) is read from."""

    name: str
    address: str
    port: int
    cpu_pids: dict[str, list[int]] = field(default_factory=dict)
    rss_pids: dict[str, list[int]] = field(default_factory=dict)
    check: Callable[[], None] = lambda: None
    api: ApiEndpoint | None = None  # set: the load goes to the HTTP sending API, not to address:port
    vhost: str = ""  # kubemta's RabbitMQ vhost of this run
    route_counts: Callable[[], route_paths.Counts] = dict  # kubemta: its services' route answer counts now


def create_api_key(path: Path, identity: str) -> str:
    """A new API key allowed to send as `identity`, written to the keys file `path` by `kubemta-admin api-keys`."""
    argv = [str(BIN / "kubemta-admin"), "api-keys", "create", API_KEY_NAME, "--identity", identity, "--file", str(path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    key = result.stdout.strip()
    if result.returncode != 0 or not key.startswith("kmta_"):
        raise RuntimeError(f"kubemta-admin api-keys create exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return key


@asynccontextmanager
async def kubemta(
    config: BenchConfig,
    workdir: Path,
    address: str,
    *,
    transports: str,
    ingress_env: dict[str, str] | None = None,
    services: tuple[str, ...] = SERVICES,
    api_key: str | None = None,
) -> AsyncIterator[SystemUnderTest]:
    """RabbitMQ (a vhost of ours on the shared broker) and the services, routing by `transports`; given
    `api_key`, the system is `kubemta-api`: its load goes to every ingress process' HTTP API with that key."""
    vhost = await asyncio.to_thread(rabbitmq.create_vhost)
    try:
        port = free_port(address)
        stack = KubemtaStack(
            workdir,
            amqp_url=rabbitmq.amqp_url(vhost),
            smtp_address=address,
            smtp_port=port,
            transports=transports,
            log_level=config.kubemta_log_level,
            ingress_processes=config.ingress_processes,
            processes=config.processes,
            services=services,
            ingress_env=ingress_env,
            extra_env=config.kubemta_env,
        )
        try:
            await stack.start()
            pids = stack.pids()
            cpu = dict(pids, rabbitmq=[await asyncio.to_thread(rabbitmq.beam_pid)])
            ports = stack.metrics_ports()
            counts = functools.partial(route_paths.scrape, ports)
            if api_key is None:
                yield SystemUnderTest(
                    "kubemta", address, port, cpu, pids, stack.check_alive, vhost=vhost, route_counts=counts
                )
            else:
                listeners = stack.listening("ingress", HTTP_LISTEN)
                if not listeners:
                    raise RuntimeError(f"the ingress got no {HTTP_LISTEN} (kubemta_stack.other_listeners)")
                for listener in listeners:
                    host, _, http_port = listener.rpartition(":")
                    await wait_for_port(host, int(http_port), within=30, what="the ingress HTTP API")
                api = ApiEndpoint(tuple(f"http://{listener}" for listener in listeners), api_key)
                yield SystemUnderTest("kubemta-api", address, port, cpu, pids, stack.check_alive, api, vhost, counts)
        finally:
            await asyncio.to_thread(stack.stop)
    finally:
        await asyncio.to_thread(rabbitmq.delete_vhost, vhost)


@asynccontextmanager
async def postfix(workdir: Path, address: str, sink: Sink) -> AsyncIterator[SystemUnderTest]:
    """A private Postfix instance relaying bench.test to the sink."""
    instance = PostfixInstance(
        workdir,
        listen_address=address,
        listen_port=free_port(address),
        transport=transport_to(sink),
    )
    try:
        await instance.start()
        master = instance.master_pid()
        if master is None:
            raise RuntimeError("the private Postfix started but its master process is not running")
        yield SystemUnderTest("postfix", address, instance.port, {"postfix": [master]})
    finally:
        await asyncio.to_thread(instance.stop)


@asynccontextmanager
async def system(
    name: str, config: BenchConfig, workdir: Path, address: str, sink: Sink
) -> AsyncIterator[SystemUnderTest]:
    """The named system; `ceiling` is smtp-source straight into the sink."""
    if name == "kubemta":
        async with kubemta(config, workdir, address, transports=transport_to(sink)) as target:
            yield target
    elif name == "kubemta-api":
        keys = workdir / "api-keys"
        key = await asyncio.to_thread(create_api_key, keys, SENDER.rpartition("@")[2])
        env = {"KUBEMTA_API_KEYS_FILE": str(keys)}
        async with kubemta(
            config, workdir, address, transports=transport_to(sink), ingress_env=env, api_key=key
        ) as target:
            yield target
    elif name == "postfix":
        async with postfix(workdir, address, sink) as target:
            yield target
    else:
        yield SystemUnderTest("ceiling", sink.address, sink.port)
