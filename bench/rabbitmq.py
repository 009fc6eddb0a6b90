"""The shared RabbitMQ at 127.0.0.1:5672: a vhost of our own per run, and its beam.smp process.

Like tests/harness/rabbitmq.py, vhosts are created and deleted with `rabbitmqctl`, so
nothing of a run stays behind in the broker.
"""

import secrets
import shutil

from bench.net import port_answers
from bench.procs import run

HOST = "127.0.0.1"
PORT = 5672


def _ctl(*args: str) -> str:
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return run([rabbitmqctl, *args], timeout=60)


def require_broker() -> None:
    """Fail clearly when no broker answers (`make rabbitmq` starts the packaged one)."""
    if not port_answers(HOST, PORT):
        raise RuntimeError(f"no RabbitMQ answers at {HOST}:{PORT}: run `make rabbitmq` first")


def create_vhost() -> str:
    """A new vhost with full permissions for guest; returns its name."""
    name = f"kubemta-bench-{secrets.token_hex(4)}"
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name


def delete_vhost(name: str) -> None:
    _ctl("delete_vhost", name)


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{HOST}:{PORT}/{vhost}"


def beam_pid() -> int:
    """The OS process id of the broker's Erlang VM (beam.smp)."""
    return int(_ctl("eval", "list_to_integer(os:getpid()).").strip())


def version() -> str:
    return _ctl("version").strip()
