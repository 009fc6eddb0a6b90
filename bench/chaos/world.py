"""What a chaos run runs against: a RabbitMQ node of its own, a vhost, the counting sink and the services.

The node is private (tests/harness/rabbitmq.py `start_private_node`), so the run may restart it
without touching the broker other tests and runs use. The services are processes
(tests/harness/stack.py) routing the run's two domains (recipients, and senders for any DSN)
straight to the sink (KUBEMTA_TRANSPORTS, no DNS), retrying after 5 s. Everything started here
is stopped by PID when the run ends, also when it fails.
"""

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.chaos.config import SERVICES, TRACKER, ChaosConfig
from bench.chaos.senders import RECIPIENT_DOMAIN, SENDER_DOMAIN
from tests.harness.mail_sink import MailSink
from tests.harness.ports import free_port, random_loopback_net, wait_for_port
from tests.harness.processes import log_tail, spawn, stop
from tests.harness.rabbitmq import BrokerNode, Vhost, start_private_node
from tests.harness.stack import Stack

READ_TOKEN = "chaos-read-token-0123456789"
ADMIN_TOKEN = "chaos-admin-token-0123456789"
READY_WITHIN = 90.0


@dataclass
class World:
    """One run's system: SMTP goes to `smtp`, mail arrives at `sink`."""

    node: BrokerNode
    vhost: Vhost
    sink: MailSink
    stack: Stack
    smtp: tuple[str, int]
    services: tuple[str, ...]  # what runs (and may be killed): the four services, and the tracker when it runs
    workdir: Path


def tracker_installed() -> bool:
    """kubemta-tracker is installed and starts (`--help` answers)."""
    script = Path(sys.executable).parent / "kubemta-tracker"
    if not script.exists():
        return False
    try:
        result = subprocess.run(
            [str(script), "--help"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@asynccontextmanager
async def private_broker(workdir: Path) -> AsyncIterator[BrokerNode]:
    node = await asyncio.to_thread(start_private_node, workdir / "rabbitmq")
    try:
        yield node
    finally:
        await asyncio.to_thread(node.shutdown)


def _environment(config: ChaosConfig, vhost: Vhost, smtp: tuple[str, int], sink: MailSink) -> dict[str, str]:
    route = f"smtp:[{sink.address}]:{sink.port}"
    return {
        "KUBEMTA_AMQP_URL": vhost.url,
        "KUBEMTA_HOSTNAME": "mta.chaos.test",
        "KUBEMTA_SMTP_LISTEN": f"{smtp[0]}:{smtp[1]}",
        "KUBEMTA_RELAY_NETWORKS": "127.0.0.0/8",
        "KUBEMTA_TRANSPORTS": f"{RECIPIENT_DOMAIN}={route};{SENDER_DOMAIN}={route}",
        "KUBEMTA_RETRY_SCHEDULE": "5s",
        "KUBEMTA_DRAIN_SECONDS": "2s",
        "KUBEMTA_PUBLISH_TIMEOUT": "3s",
        "KUBEMTA_AMQP_RECONNECT_INTERVAL": "0.5s",
        "KUBEMTA_SMTP_CONNECT_TIMEOUT": "3s",
        "KUBEMTA_DSN_BATCH_WINDOW": "1s",
        "KUBEMTA_MAX_ERRORS": "1000",
        "KUBEMTA_LOG_LEVEL": "INFO",
    }


def _tracker_environment(workdir: Path, listen: str) -> tuple[dict[str, str], dict[str, str]]:
    """(what every service gets, what the tracker gets) for a tracker at `listen`."""
    shared = {"KUBEMTA_TRACKER_URL": f"http://{listen}", "KUBEMTA_TRACKER_TOKEN": READ_TOKEN}
    own = {
        "KUBEMTA_TRACKER_LISTEN": listen,
        "KUBEMTA_INDEX_PATH": str(workdir / "tracker-index.sqlite3"),
        "KUBEMTA_READ_TOKENS": f"chaos:{READ_TOKEN}",
        "KUBEMTA_ADMIN_TOKENS": f"chaos-admin:{ADMIN_TOKEN}",
        # the names the contract gave them (harmless if the settings do not read them)
        "KUBEMTA_TRACKER_READ_TOKENS": f"chaos:{READ_TOKEN}",
        "KUBEMTA_TRACKER_ADMIN_TOKENS": f"chaos-admin:{ADMIN_TOKEN}",
    }
    return shared, own


@asynccontextmanager
async def running_world(config: ChaosConfig, node: BrokerNode, workdir: Path) -> AsyncIterator[World]:
    """A vhost, the sink and the services (the tracker first, when it is used), torn down in reverse."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    vhost = await asyncio.to_thread(node.create_vhost, "kubemta-chaos")
    net = random_loopback_net()
    sink_address = f"{net}.25"
    sink = MailSink(sink_address, free_port(sink_address), hostname="sink.chaos.test")
    await sink.start()
    smtp = ("127.0.0.1", free_port())
    stack = Stack(workdir, _environment(config, vhost, smtp, sink))
    # the worker's journal survives its kill, as the chart's emptyDir survives a container restart
    stack.env["KUBEMTA_DELIVERY_JOURNAL"] = str(workdir / "delivery-worker.journal")
    use_tracker = config.tracker == "on" or (config.tracker == "auto" and await asyncio.to_thread(tracker_installed))
    services = ((TRACKER,) if use_tracker else ()) + SERVICES
    extra: dict[str, dict[str, str]] = {}
    if use_tracker:
        shared, own = _tracker_environment(workdir, f"127.0.0.1:{free_port()}")
        stack.env.update(shared)
        extra[TRACKER] = own
    try:
        await stack.start(services, extra_env=extra, within=READY_WITHIN)
        yield World(node, vhost, sink, stack, smtp, services, workdir)
    finally:
        try:
            await asyncio.gather(*(stack.stop(name) for name in list(stack.services)))
        finally:
            await sink.stop()
            try:
                await asyncio.to_thread(vhost.delete)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass  # the node is stopped next anyway


async def wait_ready(world: World, within: float = READY_WITHIN) -> None:
    """Every running service answers /readyz with 200 (connected to the broker again)."""
    async with asyncio.timeout(within):
        for name in world.services:
            while (await world.stack.http(name, "/readyz"))[0] != 200:
                process = world.stack.services[name].process
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}:\n{world.stack.log(name)[-3000:]}")
                await asyncio.sleep(0.2)


async def restart_broker(world: World, how: str, down: float, count: int) -> None:
    """Stop the broker (its app, or the whole node), keep it down `down` seconds, start it on the same data."""
    node = world.node
    if how == "app":
        await asyncio.to_thread(node.ctl, "stop_app")
        await asyncio.sleep(down)
        await asyncio.to_thread(node.ctl, "start_app")
    else:
        if node.process is None or node.workdir is None:
            raise RuntimeError("only a private node can be restarted")
        await asyncio.to_thread(node.ctl, "stop")
        await asyncio.to_thread(stop, node.process, grace=60)
        await asyncio.sleep(down)
        log_path = node.workdir / f"node.{count}.log"
        server = node.installation.command("rabbitmq-server", node.workdir)  # the release it was started from
        node.process = spawn(server, env=node.ctl_env, log_path=log_path)
        try:
            await wait_for_port(node.host, node.port, within=90, what="the restarted RabbitMQ node")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}: {log_tail(log_path)}") from None
    await asyncio.to_thread(node.ctl, "await_startup", "--timeout", "60")
    await wait_ready(world)
