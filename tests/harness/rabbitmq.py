"""RabbitMQ for tests: the one answering at 127.0.0.1:5672, or a private node started here.

Each test (or run) gets its own vhost, created and deleted through `erl_call` (the tests' vhosts a
batch at a time: `VhostPool`), so queues and messages never leak between tests or runs. A private
node is started from the `rabbitmq-server` package when no broker answers (or when
KUBEMTA_TEST_PRIVATE_BROKER=1 forces it) and stopped by PID at the end.

Another RabbitMQ version: KUBEMTA_TEST_RABBITMQ_ROOT names a directory holding another Debian system with
its `rabbitmq-server` (`scripts/rabbitmq-root` makes one, e.g. Debian 13's RabbitMQ 4.0). The tests then start
private nodes only, each run by `chroot` into that directory (`Installation`): its Erlang and RabbitMQ, this
machine's network, so the tests reach it on 127.0.0.1 as any other node.
"""

import atexit
import functools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.ports import free_port, port_answers
from tests.harness.processes import run_bounded, spawn, stop, wait_until

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_ROOT_ENV = "KUBEMTA_TEST_RABBITMQ_ROOT"
NODE_DIR = "/mnt/kubemta-node"
"""Where a node's working directory appears inside another system's directory (a bind mount of its own)."""
ROOT_WRAPPER = (
    'mount -t proc proc "$0/proc" && mount --bind "$1" "$0' + NODE_DIR + '" || exit 70; '
    'root=$0; shift; exec chroot "$root" "$@"'
)
"""Run in a mount namespace of its own (unshare): /proc and the node's directory are mounted for this process
tree only, and vanish with it."""
CTL_TIMEOUT = 60.0
POOL_BATCH = 8
"""Vhosts a `VhostPool` makes with one `erl_call`."""
ERL_CALL = Path("/usr/lib/erlang/bin/erl_call")
"""Erlang's own C client (package erlang-base, which rabbitmq-server depends on): it evaluates an expression on a
running node without booting an Erlang VM of its own."""
ACTING_USER = "kubemta-tests"
"""Who RabbitMQ records as having added or deleted a test vhost (rabbitmqctl says `rmq-cli`)."""
SAFE_VHOST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
"""The vhost names `add_vhosts` and `delete_vhost` put into an Erlang expression: ours only, nothing to escape."""


@dataclass(frozen=True)
class Installation:
    """Where a private node's `rabbitmq-server` and `rabbitmqctl` come from: this system (`root` None), or the
    Debian system in directory `root`, entered with chroot."""

    root: Path | None = None

    @classmethod
    def chosen(cls) -> "Installation":
        """The one KUBEMTA_TEST_RABBITMQ_ROOT names, or this system's."""
        root = os.environ.get(RABBITMQ_ROOT_ENV, "")
        if not root:
            return cls()
        path = Path(root).resolve()
        if not (path / RABBITMQ_BIN.relative_to("/") / "rabbitmq-server").exists():
            raise RuntimeError(f"{RABBITMQ_ROOT_ENV}={root} holds no {RABBITMQ_BIN}/rabbitmq-server")
        return cls(path)

    def command(self, program: str | Path, workdir: Path | None) -> list[str]:
        """The command line that runs RabbitMQ's `program` (or the program at an absolute path) for the node whose
        directory is `workdir` (None: the default node, of this system only)."""
        path = str(RABBITMQ_BIN / program)  # an absolute `program` stays as it is
        if self.root is None:
            return [path]
        if workdir is None:
            raise ValueError(f"a node of {self.root} has a directory of its own")
        (self.root / NODE_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        wrapper = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", ROOT_WRAPPER]
        return [*wrapper, str(self.root), str(workdir), path]

    def seen_path(self, path: Path, workdir: Path) -> str:
        """`path`, a file under the node's `workdir`, as the node's programs see it."""
        if self.root is None:
            return str(path)
        return str(Path(NODE_DIR) / path.relative_to(workdir))


@dataclass
class BrokerNode:
    """A RabbitMQ node the tests may create vhosts on."""

    host: str
    port: int
    node_name: str | None = None  # None: the node rabbitmqctl reaches by default
    ctl_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    installation: Installation = field(default_factory=Installation)

    @property
    def private_dir(self) -> Path | None:
        """The directory of a node this harness started (its data, logs, cookie); None for the default node."""
        return self.workdir if self.node_name else None

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """Run rabbitmqctl against this node, bounded by `timeout` seconds (`run_bounded`: a timeout kills its
        Erlang VM too; one left running keeps one of the CLI's few distribution ports, and with all of them
        taken every later rabbitmqctl fails with `nodistribution`)."""
        # A private node is reached with the unwrapped CLI as the current user (its cookie is in
        # our HOME); the default node through the packaged wrapper.
        if self.private_dir is not None:
            ctl = self.installation.command("rabbitmqctl", self.private_dir)
        else:
            ctl = [str(RABBITMQ_BIN / "rabbitmqctl") if self.node_name else _rabbitmqctl()]
        command = [*ctl, *(["-n", self.node_name] if self.node_name else []), *args]
        result = run_bounded(command, timeout=timeout, env=self.ctl_env)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def delete_vhost(self, name: str, timeout: float = CTL_TIMEOUT) -> None:
        """Delete vhost `name` with everything in it, as `rabbitmqctl delete_vhost` does (the same
        `rabbit_vhost:delete/2`, one vhost per call), but through `erl_call`: a `rabbitmqctl` run boots an Erlang
        VM, about 0.7 s of CPU here, and one per test was a seventh of the test suite's CPU. A vhost that does not
        exist is an error, as with rabbitmqctl."""
        answer = self.erl_eval(f'rabbit_vhost:delete({_erlang_binary(name)}, <<"{ACTING_USER}">>).', timeout=timeout)
        if answer != "{ok, ok}":
            raise RuntimeError(f"deleting vhost {name} on {self.erl_node} answered {answer}")

    @functools.cached_property
    def _erl_call_target(self) -> tuple[str, dict[str, str]]:
        """The node's Erlang name and erl_call's environment, whose HOME holds the node's cookie (erl_call reads
        ~/.erlang.cookie; given with -c it would show in `ps`). A node of ours has both already (its HOME is its
        directory); the default node's are asked once through rabbitmqctl, and its cookie is written to a
        directory only we can read, removed when the tests' process ends."""
        if self.node_name is not None and self.private_dir is not None:
            return self.node_name, self.ctl_env
        printed = self.ctl("eval", 'io:format("~s ~s~n", [node(), erlang:get_cookie()]).')
        node, cookie = printed.splitlines()[0].split()
        home = Path(tempfile.mkdtemp(prefix="kubemta-erl-call-"))  # mode 0700
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        return node, {**self.ctl_env, "HOME": str(home)}

    @property
    def erl_node(self) -> str:
        """The node's Erlang name, e.g. rabbit@localhost."""
        return self._erl_call_target[0]

    def erl_eval(self, expression: str, timeout: float = CTL_TIMEOUT) -> str:
        """Evaluate the Erlang `expression` (ending in a full stop) on this node with `erl_call`, bounded by
        `timeout` seconds; its answer as erl_call prints it: `{ok, Result}`, or `{error, Reason}` (erl_call
        exits 0 for both)."""
        node, env = self._erl_call_target
        # erl_call's own node name is `c17` unless told otherwise, and a node refuses a second connection from a
        # name already connected: concurrent calls (the test workers) each need a name of their own
        caller = f"kubemta-test-erl-call-{os.getpid()}-{secrets.token_hex(4)}"
        erl_call = [*self.installation.command(ERL_CALL, self.private_dir), "-sname", node, "-h", caller, "-e"]
        result = run_bounded(erl_call, timeout=timeout, env=env, stdin=expression + "\n")
        if result.returncode != 0:
            raise RuntimeError(f"erl_call on {node} exited {result.returncode}: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def create_vhost(self, prefix: str = "kubemta-test") -> "Vhost":
        """A new vhost with full permissions for guest."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.add_vhosts([name])
        return Vhost(self, name)

    def add_vhosts(self, names: list[str], timeout: float = CTL_TIMEOUT) -> None:
        """Create the vhosts `names`, each with full permissions for guest, with the calls `rabbitmqctl add_vhost`
        and `set_permissions` make (`rabbit_vhost:add/2`, `rabbit_auth_backend_internal:set_permissions/6`, the
        same on RabbitMQ 3.10, 3.13 and 4.x), all in one `erl_call`; each is usable when this returns."""
        listed = ", ".join(_erlang_binary(name) for name in names)
        everything = '<<".*">>, <<".*">>, <<".*">>'
        expression = (
            f'Acting = <<"{ACTING_USER}">>, '
            f"[begin ok = rabbit_vhost:add(V, Acting), "
            f'ok = rabbit_auth_backend_internal:set_permissions(<<"guest">>, V, {everything}, Acting) end '
            f"|| V <- [{listed}]], added."
        )
        answer = self.erl_eval(expression, timeout=timeout)
        if answer != "{ok, added}":
            raise RuntimeError(f"adding vhosts {names} on {self.erl_node} answered {answer}")

    def vhost_names(self) -> set[str]:
        """The names of the node's vhosts, as `rabbitmqctl list_vhosts` lists them."""
        return set(self.ctl("list_vhosts", "--quiet", "--no-table-headers").split())

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
        self.node.delete_vhost(self.name)

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
    """Fresh vhosts for one test process, made `batch` at a time (`BrokerNode.add_vhosts`, one `erl_call`); each is
    still handed to one test only and deleted after it (`Vhost.delete`). `close` deletes what was made and not
    handed out."""

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
        self._node.add_vhosts(names)
        return names


def _erlang_binary(vhost_name: str) -> str:
    """`vhost_name` as an Erlang binary literal; ValueError unless it is a test vhost's name (SAFE_VHOST_NAME),
    which needs no escaping."""
    if not SAFE_VHOST_NAME.fullmatch(vhost_name):
        raise ValueError(f"not a test vhost name: {vhost_name!r}")
    return f'<<"{vhost_name}">>'


def _rabbitmqctl() -> str:
    found = shutil.which("rabbitmqctl") or str(RABBITMQ_BIN / "rabbitmqctl")
    return found


def find_or_start_broker(workdir: Path) -> BrokerNode:
    """The broker at 127.0.0.1:5672 if it answers, else a private node on free ports (always one when
    KUBEMTA_TEST_RABBITMQ_ROOT names another installation)."""
    private = os.environ.get("KUBEMTA_TEST_PRIVATE_BROKER") == "1" or Installation.chosen().root is not None
    if not private and port_answers("127.0.0.1", 5672):
        return BrokerNode("127.0.0.1", 5672)
    return start_private_node(workdir)


def start_private_node(
    workdir: Path, config: str = "", installation: Installation | None = None, advanced: str = ""
) -> BrokerNode:
    """Start a RabbitMQ node of our own (foreground, as a child process) and wait until it runs.

    `config` is added to its rabbitmq.conf (e.g. `max_message_size = 2097152`); `advanced`, when given, is its
    advanced.config, Erlang terms for what rabbitmq.conf cannot say (e.g. `[{rabbit, [{channel_tick_interval,
    250}]}].`). It runs from `installation`, by default the one KUBEMTA_TEST_RABBITMQ_ROOT names, if any
    (`Installation.chosen`)."""
    installation = installation if installation is not None else Installation.chosen()
    workdir.mkdir(parents=True, exist_ok=True)

    def seen(name: str) -> str:
        return installation.seen_path(workdir / name, workdir)

    port = free_port()
    dist_port = free_port()
    node_name = f"kubemta-test-{os.getpid()}-{secrets.token_hex(2)}@localhost"
    env = dict(os.environ)
    env.update(
        HOME=seen("."),  # the Erlang cookie lives here, shared by the node and rabbitmqctl
        RABBITMQ_NODENAME=node_name,
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODE_PORT=str(port),
        RABBITMQ_DIST_PORT=str(dist_port),
        RABBITMQ_MNESIA_BASE=seen("mnesia"),
        RABBITMQ_LOG_BASE=seen("log"),
        RABBITMQ_PID_FILE=seen("rabbit.pid"),
        RABBITMQ_ENABLED_PLUGINS_FILE=seen("enabled_plugins"),
        RABBITMQ_CONFIG_FILE=seen("rabbitmq"),
        RABBITMQ_ADVANCED_CONFIG_FILE=seen("advanced.config"),
        RABBITMQ_CONF_ENV_FILE=seen("rabbitmq-env.conf"),
    )
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq.conf").write_text("loopback_users = none\n" + config)
    (workdir / "rabbitmq-env.conf").write_text("")
    if advanced:
        (workdir / "advanced.config").write_text(advanced)
    process = spawn(installation.command("rabbitmq-server", workdir), env=env, log_path=workdir / "node.log")
    node = BrokerNode(
        "127.0.0.1",
        port,
        node_name=node_name,
        ctl_env=env,
        process=process,
        workdir=workdir,
        installation=installation,
    )
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
