"""The benchmark's broker: the one at 127.0.0.1:5672, or under BENCH_RABBITMQ_ROOT a private node of another
RabbitMQ (to compare the broker's CPU per message between versions). The node's start is stood in for here;
`make test-rabbitmq` starts real ones from such a root."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import rabbitmq
from tests.harness.rabbitmq import BrokerNode, Installation


@pytest.fixture
def restore_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rabbitmq, "NODE", rabbitmq.NODE)  # undone after the test


def test_a_root_gives_the_run_a_private_node_of_that_rabbitmq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_node: None
) -> None:
    started: list[Installation | None] = []
    at_exit: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def start(workdir: Path, config: str = "", installation: Installation | None = None) -> BrokerNode:
        started.append(installation)
        return BrokerNode("127.0.0.1", 7, node_name="b@localhost", workdir=workdir, process=object())  # type: ignore[arg-type]

    monkeypatch.setenv(rabbitmq.ROOT_ENV, str(tmp_path))
    monkeypatch.setattr(rabbitmq, "start_private_node", start)
    monkeypatch.setattr("bench.rabbitmq.atexit.register", lambda function, *args: at_exit.append((function, args)))
    rabbitmq.require_broker()
    rabbitmq.require_broker()  # once per process
    assert started == [Installation(tmp_path.resolve())]
    assert rabbitmq.amqp_url("v") == "amqp://guest:guest@127.0.0.1:7/v"
    assert len(at_exit) == 1 and at_exit[0][1][0] is rabbitmq.NODE  # stopped, and its directory removed, at exit


def test_without_a_root_the_shared_broker_must_answer(monkeypatch: pytest.MonkeyPatch, restore_node: None) -> None:
    monkeypatch.delenv(rabbitmq.ROOT_ENV, raising=False)
    monkeypatch.setattr(rabbitmq, "port_answers", lambda host, port: False)
    with pytest.raises(RuntimeError, match="no RabbitMQ answers at 127.0.0.1:5672"):
        rabbitmq.require_broker()
    assert rabbitmq.amqp_url("v") == "amqp://guest:guest@127.0.0.1:5672/v"
