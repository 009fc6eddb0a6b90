"""The shared RabbitMQ at 127.0.0.1:5672: a vhost of our own per run, and its beam.smp process.

The node is the test harness' `BrokerNode` (tests/harness/rabbitmq.py): vhosts are created
and deleted with `rabbitmqctl`, so nothing of a run stays behind in the broker.

With BENCH_RABBITMQ_ROOT (a directory `scripts/rabbitmq-root.sh` made: Debian trixie's RabbitMQ 4.0, sid's 4.3)
the benchmark runs on a private node of that RabbitMQ instead, started by `require_broker` and stopped at exit, so
the broker's CPU per message can be compared between versions on one machine.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from tests.harness.ports import port_answers
from tests.harness.rabbitmq import BrokerNode, Installation, Vhost, start_private_node

HOST = "127.0.0.1"
PORT = 5672
ROOT_ENV = "BENCH_RABBITMQ_ROOT"
NODE = BrokerNode(HOST, PORT)
"""The broker the benchmark uses (replaced by the private node under BENCH_RABBITMQ_ROOT)."""


def require_broker() -> None:
    """Fail clearly when no broker answers (`make rabbitmq` starts the packaged one); under BENCH_RABBITMQ_ROOT,
    start that RabbitMQ's private node (once per process) and use it."""
    global NODE
    root = os.environ.get(ROOT_ENV, "")
    if root:
        if NODE.process is None:
            workdir = Path(tempfile.mkdtemp(prefix="kubemta-bench-rabbitmq-"))
            NODE = start_private_node(workdir, installation=Installation(Path(root).resolve()))
            atexit.register(_remove_private_node, NODE, workdir)
        return
    if not port_answers(HOST, PORT):
        raise RuntimeError(f"no RabbitMQ answers at {HOST}:{PORT}: run `make rabbitmq` first")


def _remove_private_node(node: BrokerNode, workdir: Path) -> None:
    node.shutdown()
    shutil.rmtree(workdir, ignore_errors=True)


def create_vhost() -> str:
    """A new vhost with full permissions for guest; returns its name."""
    return NODE.create_vhost("kubemta-bench").name


def delete_vhost(name: str) -> None:
    Vhost(NODE, name).delete()


def amqp_url(vhost: str, node: BrokerNode | None = None) -> str:
    """The AMQP URL of `vhost` on `node` (NODE unless a test hands its own node)."""
    return (node or NODE).url(vhost)


def beam_pid(node: BrokerNode | None = None) -> int:
    """The OS process id of the broker's Erlang VM (beam.smp)."""
    return int((node or NODE).ctl("eval", "list_to_integer(os:getpid()).").strip())


def version() -> str:
    return NODE.ctl("version").strip()
