"""The per-stage benchmark against the real RabbitMQ: queue depths over AMQP, the broker's publish/consume
measurement, and each stage of a real kubemta draining the queue the stage before it filled (few messages)."""

import asyncio
from pathlib import Path

import aiormq
import pytest
from pamqp.commands import Basic

from bench import rabbitmq
from bench.broker_limit import QUEUE, declare_queue, run_phase
from bench.bus_depths import BusDepths
from bench.config import load
from bench.sink import Sink
from bench.stage_runs import FRESH, INPUT, StageBench
from bench.stages import fresh_routes
from tests.harness.ports import free_port, random_loopback_net
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker


async def test_depths_count_ready_messages_and_a_missing_queue_as_zero(vhost: Vhost) -> None:
    connection = await aiormq.connect(vhost.url)
    try:
        channel = await connection.channel()
        await channel.queue_declare("q", durable=True, arguments={"x-queue-type": "quorum"})
        for _ in range(3):
            await channel.basic_publish(b"x", routing_key="q", properties=Basic.Properties(delivery_mode=2))
    finally:
        await connection.close()
    async with BusDepths(vhost.url) as depths:
        assert await depths.ready("missing") == 0
        assert await depths.ready("q") == 3  # the channel the missing queue closed was replaced
        assert await depths.total(["q", "missing", "q"]) == 6


async def test_the_broker_phases_publish_and_consume_every_message(vhost: Vhost) -> None:
    await declare_queue(vhost.url)
    beam = await asyncio.to_thread(rabbitmq.beam_pid, vhost.node)
    published = await asyncio.to_thread(run_phase, "publish", vhost.url, 203, beam, None)
    assert published.error is None and published.messages == 203 and published.rate > 0
    assert published.client_ms_per_message > 0 and published.clients == 4
    async with BusDepths(vhost.url) as depths:
        assert await depths.ready(QUEUE) == 203
    consumed = await asyncio.to_thread(run_phase, "consume", vhost.url, 203, beam, None)
    assert consumed.error is None and consumed.rate > 0
    async with BusDepths(vhost.url) as depths:
        left = [await depths.ready(QUEUE)]
        for _ in range(100):  # every message acknowledged (the count settles just after the clients close)
            if not left[-1]:
                break
            await asyncio.sleep(0.2)
            left.append(await depths.ready(QUEUE))
        assert left[-1] == 0, left


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_each_stage_drains_what_the_one_before_it_queued(vhost: Vhost, tmp_path: Path) -> None:
    config = load(["--stage-messages", "40", "--sessions", "4", "--settle-timeout", "0"])
    prefix = random_loopback_net()
    sink = Sink(tmp_path, f"{prefix}.2", free_port(f"{prefix}.2"))
    await sink.start()
    try:
        bench = StageBench(config, tmp_path, vhost.name, sink, f"{prefix}.1", vhost.node)
        ingress = await bench.ingress(1, 40, None)
        assert ingress.error is None and ingress.messages == 40 and ingress.cpu_ms_per_message
        for stage in INPUT:
            drained = await bench.drain(stage, 1, None)
            assert drained.error is None, drained.error
            assert drained.messages <= 40 and drained.stage == stage  # those after every process was ready
        assert sink.messages() == 40
        async with BusDepths(vhost.url) as depths:
            assert await depths.total(["inbound", "route", "deliver"]) == 0
        direct, fresh = await fresh_routes(config, bench, 1)  # the resolver's answer is in the routes stream now
        assert direct.error is None and (direct.stage, direct.variant) == ("ingress", FRESH), direct.error
        assert direct.messages == 40  # to deliver, or to inbound before the ingress read the streams
        assert fresh.error is None and (fresh.stage, fresh.variant) == ("queue-manager", FRESH)
        async with BusDepths(vhost.url) as depths:  # the first jobs may beat the routes stream's followers to it
            # 40 + the ingress' 40 and the refill's 40: straight to deliver, or to route
            assert sink.messages() + await depths.ready("route") == 120
            assert await depths.total(["inbound", "deliver"]) == 0
    finally:
        sink.stop()
