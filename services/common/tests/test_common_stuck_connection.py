"""The stuck-connection watchdog (amqp/stuck_connection.py): a service whose broker connection does not come back
while the broker takes new connections stops, with exit status 1, to be started again; a broker that is down stops
nobody.

The last test makes a real connection stuck: the broker closes the service's connection (`rabbitmqctl
close_connection`) after the task that would reconnect it was cancelled, which stands in for aio-pika's
reconnection waiting for itself (RabbitMQ 4.3.6 after a consumer timeout, before consumer.py consumed again by
itself)."""

import asyncio

import pytest

from kubemta_common.amqp.stuck_connection import broker_answers, watch
from kubemta_common.command_line import service_main
from kubemta_common.runtime import StopEvent
from kubemta_common.service import ServiceCore
from kubemta_common.settings import ServiceSettings
from tests.harness.ingress_kit import eventually
from tests.harness.ports import free_port
from tests.harness.rabbitmq import Vhost


class Broker:
    """What the watchdog sees: the connection's state and the broker's answers to new connections."""

    def __init__(self, *, connected: bool, answers: bool) -> None:
        self.connected = connected
        self.answers = answers
        self.asked = 0
        self.stuck: list[str] = []

    async def answer(self) -> bool:
        self.asked += 1
        return self.answers

    async def watch_for(self, seconds: float, stuck_after: float = 0.2) -> None:
        """Run the watchdog (checking every 10 ms) for `seconds`, or until it called on_stuck."""
        task = asyncio.create_task(
            watch(lambda: self.connected, self.answer, self.stuck.append, stuck_after=stuck_after, check_every=0.01)
        )
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=seconds)
        except TimeoutError:
            task.cancel()


async def test_a_connected_service_is_never_stopped_nor_asks_the_broker() -> None:
    broker = Broker(connected=True, answers=True)
    await broker.watch_for(0.5)
    assert (broker.stuck, broker.asked) == ([], 0)


async def test_a_connection_stuck_while_the_broker_answers_stops_the_service() -> None:
    broker = Broker(connected=False, answers=True)
    await broker.watch_for(5.0)
    assert broker.asked == 1
    assert len(broker.stuck) == 1 and "this process' connection is stuck" in broker.stuck[0]


async def test_a_broker_that_is_down_stops_nobody_and_is_asked_once_per_period() -> None:
    broker = Broker(connected=False, answers=False)
    await broker.watch_for(1.5, stuck_after=0.3)
    assert broker.stuck == []
    assert 2 <= broker.asked <= 6  # about every 0.3 s (4 times), never at every check (every 10 ms: about 150)


async def test_a_connection_that_comes_back_in_time_resets_the_clock() -> None:
    broker = Broker(connected=False, answers=True)

    async def flap() -> None:
        for _ in range(16):
            await asyncio.sleep(0.05)
            broker.connected = not broker.connected  # never down for long: ten times less than stuck_after

    flapping = asyncio.create_task(flap())
    await broker.watch_for(0.8, stuck_after=0.5)
    await flapping
    assert (broker.stuck, broker.asked) == ([], 0)


@pytest.mark.broker
async def test_broker_answers_a_running_broker_and_nothing_else(vhost: Vhost) -> None:
    assert await broker_answers(vhost.url)
    assert not await broker_answers(f"amqp://guest:guest@127.0.0.1:{free_port()}/")  # nothing listens there
    assert not await broker_answers(vhost.url.replace("guest:guest@", "guest:wrong@"))  # refused credentials


def test_a_service_that_stopped_itself_exits_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def failing(stop: asyncio.Event) -> None:
        assert isinstance(stop, StopEvent)
        stop.fail("the connection is stuck")
        await stop.wait()

    with pytest.raises(SystemExit) as exited:
        service_main("demo", "d", ServiceSettings, failing, [])
    assert exited.value.code == 1
    assert "kubemta-demo: stopped: the connection is stuck" in capsys.readouterr().err


@pytest.mark.broker
async def test_a_real_stuck_connection_fails_the_services_stop_event(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEMTA_AMQP_URL", vhost.url)
    monkeypatch.setenv("KUBEMTA_BROKER_STUCK_AFTER", "1s")
    monkeypatch.setenv("KUBEMTA_METRICS_LISTEN", f"127.0.0.1:{free_port()}")
    core = ServiceCore("stuck-test", ServiceSettings.load())
    stop = StopEvent()
    await core.start(stop)
    try:
        await eventually(lambda: core.broker.connected, within=20)
        connection = core.broker._connection
        assert connection is not None
        factory = connection._RobustConnection__reconnection_task  # type: ignore[attr-defined]
        factory.cancel()  # the task that reconnects it: now nothing will, as when aio-pika waited for itself
        listed = vhost.node.ctl("list_connections", "--no-table-headers", "--quiet", "pid", "vhost")
        pids = [line.split()[0] for line in listed.splitlines() if line.split()[1:] == [vhost.name]]
        assert pids, listed  # the service's one connection (this test's vhost is its own)
        for pid in pids:
            vhost.node.ctl("close_connection", pid, "a test makes this connection stuck")
        await asyncio.wait_for(stop.wait(), timeout=30)  # within 1 s, the check's 0.25 s and the answer
        assert stop.failure is not None and "stuck" in stop.failure
    finally:
        await core.close()
