"""The shared RabbitMQ at 127.0.0.1:5672: a vhost of our own per run, and its beam.smp process.

The node is the test harness' `BrokerNode` (tests/harness/rabbitmq.py): vhosts are created
and deleted with `rabbitmqctl`, so nothing of a run stays behind in the broker.
"""

from tests.harness.ports import port_answers
from tests.harness.rabbitmq import BrokerNode, Vhost

HOST = "127.0.0.1"
PORT = 5672
NODE = BrokerNode(HOST, PORT)


def require_broker() -> None:
    """Fail clearly when no broker answers (`make rabbitmq` starts the packaged one)."""
    if not port_answers(HOST, PORT):
        raise RuntimeError(f"no RabbitMQ answers at {HOST}:{PORT}: run `make rabbitmq` first")


def create_vhost() -> str:
    """A new vhost with full permissions for guest; returns its name."""
    return NODE.create_vhost("kubemta-bench").name


def delete_vhost(name: str) -> None:
    Vhost(NODE, name).delete()


def amqp_url(vhost: str, node: BrokerNode = NODE) -> str:
    """The AMQP URL of `vhost` on `node` (the shared broker unless a test hands its own node)."""
    return node.url(vhost)


def beam_pid(node: BrokerNode = NODE) -> int:
    """The OS process id of the broker's Erlang VM (beam.smp)."""
    return int(node.ctl("eval", "list_to_integer(os:getpid()).").strip())


def version() -> str:
    return NODE.ctl("version").strip()
