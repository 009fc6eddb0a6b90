"""Poison handling that works on every RabbitMQ kubemta supports (3.10+, 3.13, 4.x).

- Failed deliveries go back with basic.reject: RabbitMQ 4.3 stopped counting basic.nack toward
  x-delivery-limit, so a nacked poison message would circle forever there.
- `held` is declared so that it never drops a message: -1 (no limit) on 4.x, where the default is 20;
  nothing on 3.x, where -1 would drop a message at its first return.
"""

import asyncio
from typing import Any

import pytest

from kubemta_common.amqp import consumer as consumer_module
from kubemta_common.amqp.consumer import Consumer, return_pause, returned_count
from kubemta_common.amqp.topology import broker_major_version, held_arguments
from kubemta_common.errors import PermanentError, PublishFailed


@pytest.mark.parametrize(
    ("version", "limit"),
    [
        ("3.10.8", None),
        ("3.13.7", None),
        ("4.0.5", -1),
        ("4.1.0", -1),
        ("4.3.0-rc.1", -1),
        ("5.0.0", -1),
        ("", None),  # unknown: the 3.x declaration, never the one that drops at the first return on 3.x
        ("garbage", None),
    ],
)
def test_held_never_drops_a_message_on_any_version(version: str, limit: int | None) -> None:
    arguments = held_arguments(version)
    assert arguments["x-queue-type"] == "quorum"
    assert arguments.get("x-delivery-limit") == limit


def test_broker_major_version() -> None:
    assert broker_major_version("3.10.8") == 3
    assert broker_major_version("4.2.1") == 4
    assert broker_major_version("v4") is None
    assert broker_major_version("٤.0") is None  # a non-ASCII digit is not a version


class FakeMessage:
    """Records how the consumer settled it."""

    def __init__(self, headers: dict[str, Any] | None = None) -> None:
        self.headers = headers or {}
        self.message_id = "M1"
        self.settled: list[tuple[str, bool | None]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append(("reject", requeue))

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append(("nack", requeue))


def consumer_for(handler: Any) -> Consumer:
    return Consumer(broker=None, queue_name="inbound", handler=handler, prefetch=1, retry_pause=0.0)  # type: ignore[arg-type]


async def settle(error: BaseException | None, headers: dict[str, Any] | None = None) -> list[tuple[str, bool | None]]:
    async def handler(message: Any) -> None:
        if error is not None:
            raise error

    message = FakeMessage(headers)
    if await consumer_for(handler)._process(message):  # type: ignore[arg-type]
        message.settled.append(("ack", None))  # to acknowledge: the consumer's AckBatcher sends it (acks.py)
    return message.settled


async def test_a_crashing_handler_returns_the_message_with_reject_so_every_version_counts_it() -> None:
    assert await settle(RuntimeError("bug")) == [("reject", True)]


async def test_a_transient_failure_returns_the_message_with_reject_too() -> None:
    assert await settle(PublishFailed("no confirm")) == [("reject", True)]


async def test_a_permanent_failure_dead_letters_to_held_and_success_acknowledges() -> None:
    assert await settle(PermanentError("undecodable")) == [("reject", False)]
    assert await settle(None) == [("ack", None)]


def test_the_pause_grows_with_the_returns_and_is_bounded() -> None:
    assert [return_pause(0.5, n, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert return_pause(1.0, 10**6, 30.0) == 30.0
    assert returned_count(FakeMessage({"x-delivery-count": 3})) == 3  # type: ignore[arg-type]
    for hostile in (-1, "7", None, 2.5, b"9"):
        assert returned_count(FakeMessage({"x-delivery-count": hostile})) == 0  # type: ignore[arg-type]


async def test_the_pause_before_a_return_follows_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the consumer's only sleep is the pause

    async def crash(message: Any) -> None:
        raise RuntimeError("bug")

    consumer = Consumer(broker=None, queue_name="q", handler=crash, prefetch=1, retry_pause=1.0)  # type: ignore[arg-type]
    for count in (0, 2, 9):
        await consumer._process(FakeMessage({"x-delivery-count": count}))  # type: ignore[arg-type]
    assert slept == [1.0, 4.0, consumer_module.MAX_CRASH_PAUSE]
