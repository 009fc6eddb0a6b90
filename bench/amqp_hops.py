"""`python -m bench.amqp_hops`: CPU per message of kubemta's own AMQP handling, and of the broker.

On a vhost of its own on the shared RabbitMQ (bench/rabbitmq.py), with the topology every service
declares (Broker.run: durable quorum queues), it runs two phases and prints, for each, the CPU
milliseconds per message of this process and of the broker's beam.smp:

- publish: N persistent 1 KiB messages to `route` through `Publisher` (confirms), `--concurrency`
  at a time (as ingress sessions do);
- hop: a `Consumer` of `route` whose handler re-publishes each body to `deliver` (confirmed) before
  it returns, as a pipeline stage does, until all N are acknowledged.

Broker CPU is the whole node's (other users of the shared broker add noise: repeat, compare medians).
"""

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from bench import procstats, rabbitmq
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.consumer import Consumer
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.topology import DELIVER, ROUTE
from tests.harness.rabbitmq import Vhost


@dataclass(frozen=True)
class Phase:
    """CPU used by one phase."""

    name: str
    messages: int
    seconds: float
    own_cpu: float
    broker_cpu: float

    def line(self) -> str:
        per = 1000.0 / self.messages
        return (
            f"{self.name:8} {self.messages:6d} msgs {self.seconds:6.2f}s {self.messages / self.seconds:8.0f} msg/s  "
            f"client {self.own_cpu * per:5.3f} ms/msg  broker {self.broker_cpu * per:5.3f} ms/msg"
        )


async def _measure(name: str, messages: int, beam: int, work: Callable[[], Awaitable[None]]) -> Phase:
    own0, broker0, wall0 = time.process_time(), procstats.cpu_seconds([beam]), time.monotonic()
    await work()
    wall = time.monotonic() - wall0
    return Phase(name, messages, wall, time.process_time() - own0, procstats.cpu_seconds([beam]) - broker0)


async def run(url: str, messages: int, size: int, concurrency: int, prefetch: int) -> list[Phase]:
    """Both phases on `url`; returns their figures."""
    beam = rabbitmq.beam_pid()
    broker = Broker(url, name="amqp-hops", retry_delays=(1.0,), reconnect_interval=0.5)
    async with asyncio.timeout(30):
        await broker.run()
    publisher = Publisher(broker, 30.0)
    body = os.urandom(size)
    try:

        async def publish_all() -> None:
            ids = iter(range(messages))

            async def lane() -> None:
                for number in ids:
                    await publisher.publish_raw(ROUTE, body, message_id=f"M{number}", message_type="bench")

            await asyncio.gather(*(lane() for _ in range(concurrency)))

        done = asyncio.Event()
        handled = 0

        async def handler(message: AbstractIncomingMessage) -> None:
            nonlocal handled
            await publisher.publish_raw(
                DELIVER, message.body, message_id=message.message_id or "", message_type="bench"
            )
            handled += 1
            if handled >= messages:
                done.set()

        consumer = Consumer(broker, ROUTE, handler, prefetch=prefetch)

        async def hop() -> None:
            await consumer.start()
            await done.wait()
            await consumer.stop(10.0)  # flushes what is still to acknowledge

        async with asyncio.timeout(600):
            phases = [await _measure("publish", messages, beam, publish_all)]
            phases.append(await _measure("hop", messages, beam, hop))
        return phases
    finally:
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.amqp_hops", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    rabbitmq.require_broker()
    for _ in range(args.rounds):
        name = rabbitmq.create_vhost()
        try:
            url = rabbitmq.amqp_url(name)
            phases = asyncio.run(run(url, args.messages, args.size, args.concurrency, args.prefetch))
        finally:
            Vhost(rabbitmq.NODE, name).delete()
        for phase in phases:
            sys.stdout.write(phase.line() + "\n")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
