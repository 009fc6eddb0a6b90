"""RabbitMQ for tests: the one answering at 127.0.0.1:5672, or a private node started here.

Each test (or run) gets its own vhost, created and deleted through `rabbitmqctl` (the tests'
vhosts a batch at a time: `VhostPool`), so queues and messages never leak between tests or
runs. A private node is started from the `rabbitmq-server` package when no broker answers
(or when KUBEMTA_TEST_PRIVATE_BROKER=1 forces it) and stopped by PID at the end.
"""

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, port_answers
from tests.harness.processes import spawn, stop, wait_until

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
CTL_TIMEOUT = 60.0
POOL_BATCH = 8
"""Vhosts a `VhostPool` makes with one `rabbitmqctl import_definitions`."""
POOL_READY_TIMEOUT = 30.0
"""Seconds a batch may take to become usable (RabbitMQ 3.10 imports definitions asynchronously)."""


@dataclass
class BrokerNode:
    """A RabbitMQ node the tests may create vhosts on."""

    host: str
    port: int
    node_name: str | None = None  # None: the node rabbitmqctl reaches by default
    ctl_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node (bounded)."""
        # A private node is reached with the unwrapped CLI as the current user (its cookie is in
        # our HOME); the default node through the packaged wrapper.
        ctl = str(RABBITMQ_BIN / "rabbitmqctl") if self.node_name else _rabbitmqctl()
        command = [ctl, *(["-n", self.node_name] if self.node_name else []), *args]
        result = subprocess.run(
            command,
            env=self.ctl_env,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def create_vhost(self, prefix: str = "kubemta-test") -> "Vhost":
        """A new vhost with full permissions for guest."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return Vhost(self, name)

    def url(self, vhost: str) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{vhost}"

    def shutdown(self) -> None:
        """Stop the private node, if this harness started one."""
        if self.process is not None:
            try:
                self.ctl("stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            stop(self.process, grace=20)
            self.process = None


@dataclass
class Vhost:
    """A test vhost; `delete()` removes it with everything in it."""

    node: BrokerNode
    name: str

    @property
    def url(self) -> str:
        return self.node.url(self.name)

    def delete(self) -> None:
        self.node.ctl("delete_vhost", self.name)

    def queue_depths(self) -> dict[str, int]:
        """Messages ready + unacknowledged per queue."""
        out = self.node.ctl("list_queues", "-p", self.name, "--no-table-headers", "--quiet", "name", "messages")
        depths: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths


class VhostPool:
    """Fresh vhosts for one test process, made `batch` at a time; each is still handed to one test only and
    deleted after it (`Vhost.delete`).

    Every `rabbitmqctl` run boots an Erlang VM, about 0.65 s of CPU here, and `BrokerNode.create_vhost` takes two
    (`add_vhost`, `set_permissions`): with the deletion, three per test, which was the larger part of the test
    suite's CPU. A batch takes two runs for `batch` vhosts: one `import_definitions` (the vhosts and guest's
    permissions; the same command on RabbitMQ 3.10, 3.13 and 4.x) and one `list_user_permissions guest`, repeated
    until every new vhost is listed (3.10 imports asynchronously). `close` deletes what was made and not handed out.
    """

    def __init__(self, node: BrokerNode, prefix: str = "kubemta-test", batch: int = POOL_BATCH) -> None:
        self._node = node
        self._prefix = prefix
        self._batch = batch
        self._ready: list[str] = []

    def take(self) -> "Vhost":
        """A vhost no test has used, with full permissions for guest."""
        if not self._ready:
            self._ready = self._make_batch()
        return Vhost(self._node, self._ready.pop())

    def close(self) -> None:
        """Delete the vhosts made and never handed out."""
        while self._ready:
            Vhost(self._node, self._ready.pop()).delete()

    def _make_batch(self) -> list[str]:
        names = [f"{self._prefix}-{secrets.token_hex(4)}" for _ in range(self._batch)]
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        definitions = {
            "vhosts": [{"name": name} for name in names],
            "permissions": [{"user": "guest", "vhost": name, **everything} for name in names],
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(definitions, file)
        try:
            os.chmod(file.name, 0o644)  # the packaged rabbitmqctl may read it as the rabbitmq user
            self._node.ctl("import_definitions", file.name)
        finally:
            os.unlink(file.name)
        deadline = time.monotonic() + POOL_READY_TIMEOUT
        while True:
            listed = self._node.ctl("list_user_permissions", "guest", "--quiet", "--no-table-headers")
            granted = {line.split()[0] for line in listed.splitlines() if line.split()}
            if granted.issuperset(names):
                return names
            if time.monotonic() > deadline:
                missing = sorted(set(names) - granted)
                raise RuntimeError(f"vhosts {missing} not usable {POOL_READY_TIMEOUT:.0f} s after import_definitions")
            time.sleep(0.2)


def _rabbitmqctl() -> str:
    found = shutil.which("rabbitmqctl") or str(RABBITMQ_BIN / "rabbitmqctl")
    return found


def find_or_start_broker(workdir: Path) -> BrokerNode:
    """The broker at 127.0.0.1:5672 if it answers, else a private node on free ports."""
    if os.environ.get("KUBEMTA_TEST_PRIVATE_BROKER") != "1" and port_answers("127.0.0.1", 5672):
        return BrokerNode("127.0.0.1", 5672)
    return start_private_node(workdir)


def start_private_node(workdir: Path, config: str = "") -> BrokerNode:
    """Start a RabbitMQ node of our own (foreground, as a child process) and wait until it runs.

    `config` is added to its rabbitmq.conf (e.g. `max_message_size = 2097152`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    dist_port = free_port()
    node_name = f"kubemta-test-{os.getpid()}-{secrets.token_hex(2)}@localhost"
    env = dict(os.environ)
    env.update(
        HOME=str(workdir),  # the Erlang cookie lives here, shared by the node and rabbitmqctl
        RABBITMQ_NODENAME=node_name,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=str(workdir / "mnesia"),
        RABBITMQ_LOG_BASE=str(workdir / "log"),
        RABBITMQ_PID_FILE=str(workdir / "rabbit.pid"),
        RABBITMQ_ENABLED_PLUGINS_FILE=str(workdir / "enabled_plugins"),
        RABBITMQ_CONFIG_FILE=str(workdir / "rabbitmq"),
        RABBITMQ_ADVANCED_CONFIG_FILE=str(workdir / "advanced.config"),
        RABBITMQ_CONF_ENV_FILE=str(workdir / "rabbitmq-env.conf"),
    )
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq.conf").write_text("loopback_users = none\n" + config)
    (workdir / "rabbitmq-env.conf").write_text("")
    process = spawn([str(RABBITMQ_BIN / "rabbitmq-server")], env=env, log_path=workdir / "node.log")
    node = BrokerNode("127.0.0.1", port, node_name=node_name, ctl_env=env, process=process, workdir=workdir)
    try:
        wait_until(
            lambda: process.poll() is not None or port_answers("127.0.0.1", port),
            timeout=90,
            interval=0.5,
            what="the private RabbitMQ node",
        )
        if process.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited: {(workdir / 'node.log').read_text()[-2000:]}")
        node.ctl("await_startup", "--timeout", "60")
    except BaseException:
        node.shutdown()
        raise
    return node
