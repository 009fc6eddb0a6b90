"""The systems under test: kubemta (RabbitMQ + four services), a private Postfix, or the sink itself.

Each is an async context manager yielding where smtp-source sends to and which processes
to account CPU and memory to; leaving it stops everything it started, also on errors
and cancellation (Ctrl-C).
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench import rabbitmq
from bench.config import BenchConfig
from bench.kubemta_stack import SERVICES, KubemtaStack
from bench.postfix import PostfixInstance
from bench.sink import Sink
from tests.harness.ports import free_port

DOMAIN = "bench.test"


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


@asynccontextmanager
async def kubemta(
    config: BenchConfig,
    workdir: Path,
    address: str,
    *,
    transports: str,
    ingress_env: dict[str, str] | None = None,
    services: tuple[str, ...] = SERVICES,
) -> AsyncIterator[SystemUnderTest]:
    """RabbitMQ (a vhost of ours on the shared broker) and the services, routing by `transports`."""
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
            services=services,
            ingress_env=ingress_env,
        )
        try:
            await stack.start()
            pids = stack.pids()
            cpu = dict(pids, rabbitmq=[await asyncio.to_thread(rabbitmq.beam_pid)])
            yield SystemUnderTest("kubemta", address, port, cpu, pids, stack.check_alive)
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
    elif name == "postfix":
        async with postfix(workdir, address, sink) as target:
            yield target
    else:
        yield SystemUnderTest("ceiling", sink.address, sink.port)
