"""Adding and deleting test vhosts through erl_call (`BrokerNode.add_vhosts`, `delete_vhost`): a deleted vhost goes with
its queues and messages, one that is not there is an error as with rabbitmqctl, and a name that is not a test vhost's
never reaches the node."""

import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.harness.processes import run_bounded
from tests.harness.rabbitmq import BrokerNode

pytestmark = pytest.mark.broker


async def test_a_deleted_vhost_is_gone_with_its_queues_and_messages(broker_node: BrokerNode) -> None:
    vhost = broker_node.create_vhost(prefix="kubemta-delete-test")
    try:
        connection = await aio_pika.connect(vhost.url, timeout=10)
        async with connection:
            channel = await connection.channel()  # publisher confirms: the message is in the queue
            await channel.declare_queue("kept", durable=True, arguments={"x-queue-type": "quorum"})
            await channel.default_exchange.publish(aio_pika.Message(b"left behind"), routing_key="kept")
            kept = await channel.declare_queue("kept", passive=True)
            assert kept.declaration_result.message_count == 1
    finally:
        broker_node.delete_vhost(vhost.name)
    assert vhost.name not in broker_node.vhost_names()
    broker_node.add_vhosts([vhost.name])  # the same name again: a new vhost, without the old one's queue
    try:
        connection = await aio_pika.connect(vhost.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_queue("kept", passive=True)
    finally:
        broker_node.delete_vhost(vhost.name)


def test_deleting_a_vhost_that_is_not_there_is_an_error(broker_node: BrokerNode) -> None:
    vhost = broker_node.create_vhost(prefix="kubemta-delete-test")
    vhost.delete()
    with pytest.raises(RuntimeError, match="no_such_vhost"):
        vhost.delete()


@pytest.mark.parametrize(
    "name",
    [
        'x">>, <<"guest">>), halt(',  # would close the binary and call something else
        "kubemta-test-1 ",
        "",
        "a/b",
        "ü",
        "x" * 201,
        "x\n",
    ],
)
def test_a_name_that_is_not_a_test_vhost_name_is_refused_before_the_node_sees_it(
    broker_node: BrokerNode, name: str
) -> None:
    with pytest.raises(ValueError, match="not a test vhost name"):  # erl_call would have answered an error
        broker_node.delete_vhost(name)


@pytest.mark.parametrize("name", ['x">>], ok), halt(', "", "a b"])
def test_vhosts_to_add_with_a_name_that_is_not_a_test_vhost_name_are_refused_before_the_node_sees_them(
    broker_node: BrokerNode, name: str
) -> None:
    with pytest.raises(ValueError, match="not a test vhost name"):
        broker_node.add_vhosts(["kubemta-delete-test-fine", name])
    assert "kubemta-delete-test-fine" not in broker_node.vhost_names()  # none of the batch was made


def test_calls_at_the_same_time_each_reach_the_node(broker_node: BrokerNode) -> None:
    """The test workers add and delete vhosts concurrently: each erl_call connects under a name of its own (with
    erl_call's default name all but one of these failed with `failed to connect to node`)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: broker_node.erl_eval("timer:sleep(300), 42."), range(8)))
    assert answers == ["{ok, 42}"] * 8


def test_the_cookie_is_read_from_a_file_only_we_can_read_never_from_the_command_line(
    broker_node: BrokerNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, str] | None]] = []

    def recording(argv: list[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
        calls.append((argv, kwargs.get("env")))
        return run_bounded(argv, **kwargs)

    monkeypatch.setattr("tests.harness.rabbitmq.run_bounded", recording)
    assert broker_node.erl_eval("1 + 1.") == "{ok, 2}"
    [(argv, env)] = calls
    erl_call_args = argv[next(at for at, arg in enumerate(argv) if arg.endswith("/erl_call")) :]  # not chroot's sh -c
    assert env is not None and "-c" not in erl_call_args
    # a node of ours: its directory is HOME (as a node in another root sees it); the default node's: a copy
    cookie_file = (broker_node.private_dir or Path(env["HOME"])) / ".erlang.cookie"
    assert cookie_file.read_text() not in " ".join(argv)
    assert stat.S_IMODE(cookie_file.stat().st_mode) == 0o400
    if broker_node.private_dir is None:  # the default node's cookie, copied for erl_call
        assert stat.S_IMODE(cookie_file.parent.stat().st_mode) == 0o700
