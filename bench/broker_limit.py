"""The broker's own limit on this node: quorum-queue publishes with confirms, and consumes with acks, per second.

On a vhost of its own, one durable quorum queue (as kubemta's stages are) takes `messages`
persistent 1 KiB messages from `PROCESSES` publisher processes with `CONNECTIONS`
connections each (a confirming channel each, `WINDOW` publishes awaiting their confirm per
connection); then as many consumer processes (prefetch `PREFETCH`, one basic.ack per
message, as kubemta's consumers do) take them all. The clients are aiormq (no aio-pika on
top), several processes, so the client is not the limit on a machine with more cores than
one; their CPU is reported too. Per phase: messages per second (from the first client's
start to the last one's end, each connected before the clock starts), beam.smp CPU ms per
message and the clients' CPU ms per message.

`python -m bench.broker_limit worker publish|consume URL QUEUE COUNT CONNECTIONS` is one
client process (it prints its figures as JSON); bench.stages runs them.
"""

import asyncio
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import aiormq
from pamqp.commands import Basic

from bench.procstats import cpu_seconds
from bench.settle import Settled

SIZE = 1024
PROCESSES = 2
CONNECTIONS = 2  # per process
WINDOW = 64  # unconfirmed publishes per connection
PREFETCH = 64
QUEUE = "broker-limit"
WORKER_TIMEOUT = 600.0


@dataclass
class BrokerPhase:
    """Publishing or consuming `messages`: the rate and CPU per message."""

    phase: str
    messages: int
    seconds: float
    rate: float
    broker_ms_per_message: float
    client_ms_per_message: float
    clients: int  # connections
    settled: dict[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def _publisher(url: str, queue: str, count: int, go: asyncio.Barrier) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        properties = Basic.Properties(delivery_mode=2, content_type="application/octet-stream")
        body = b"x" * SIZE
        gate = asyncio.Semaphore(WINDOW)

        async def one() -> None:
            async with gate:
                await channel.basic_publish(body, routing_key=queue, properties=properties)

        await go.wait()  # every connection of the process is open: the clock starts
        await asyncio.gather(*(one() for _ in range(count)))
    finally:
        await connection.close()


async def _consumer(url: str, queue: str, count: int, go: asyncio.Barrier) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=PREFETCH)
        done = asyncio.Event()
        taken = acked = 0

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            # aiormq may run these callbacks concurrently: done only once every ack of this share was written
            nonlocal taken, acked
            if taken >= count:  # prefetched beyond this client's share: returned to the queue at close
                return
            taken += 1
            tag = message.delivery_tag
            if tag is not None:  # always, for a basic.deliver
                await channel.basic_ack(tag)
            acked += 1
            if acked >= count:
                done.set()

        await go.wait()  # every connection of the process is open: the clock starts
        consuming = await channel.basic_consume(queue, on_message, no_ack=False)
        await done.wait()
        if consuming.consumer_tag is not None:  # no more deliveries, then the channel closed before the connection
            await channel.basic_cancel(consuming.consumer_tag)
        await channel.close()
    finally:
        await connection.close()


async def _worker(phase: str, url: str, queue: str, count: int, connections: int) -> dict[str, float]:
    shares = [count // connections + (1 if index < count % connections else 0) for index in range(connections)]
    shares = [share for share in shares if share]
    go = asyncio.Barrier(len(shares) + 1)
    client = _publisher if phase == "publish" else _consumer
    tasks = [asyncio.create_task(client(url, queue, share, go)) for share in shares]
    async with asyncio.timeout(60):
        await go.wait()
    start = time.time()
    await asyncio.gather(*tasks)
    end = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"start": start, "end": end, "cpu": usage.ru_utime + usage.ru_stime}


def _spawn_workers(phase: str, url: str, messages: int) -> list[subprocess.Popen[str]]:
    shares = [messages // PROCESSES + (1 if index < messages % PROCESSES else 0) for index in range(PROCESSES)]
    argv = [sys.executable, "-m", "bench.broker_limit", "worker", phase, url, QUEUE]
    return [
        subprocess.Popen([*argv, str(share), str(CONNECTIONS)], stdout=subprocess.PIPE, text=True) for share in shares
    ]


def run_phase(phase: str, url: str, messages: int, beam: int, quiet: Settled | None) -> BrokerPhase:
    """Run the publisher (or consumer) processes to the end; their figures and beam.smp's CPU."""
    beam_before = cpu_seconds([beam])
    workers = _spawn_workers(phase, url, messages)
    figures: list[dict[str, float]] = []
    error = None
    for worker in workers:
        try:
            out, _ = worker.communicate(timeout=WORKER_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate()
            error = f"a {phase} client did not finish within {WORKER_TIMEOUT:.0f} s"
            continue
        if worker.returncode != 0:
            error = f"a {phase} client exited {worker.returncode}"
            continue
        figures.append(json.loads(out.strip().splitlines()[-1]))
    beam_used = cpu_seconds([beam]) - beam_before
    if error or not figures:
        return BrokerPhase(phase, messages, 0.0, 0.0, 0.0, 0.0, PROCESSES * CONNECTIONS, error=error or "no figures")
    seconds = max(each["end"] for each in figures) - min(each["start"] for each in figures)
    client = sum(each["cpu"] for each in figures)
    return BrokerPhase(
        phase=phase,
        messages=messages,
        seconds=round(seconds, 3),
        rate=round(messages / seconds, 1) if seconds > 0 else 0.0,
        broker_ms_per_message=round(beam_used / messages * 1000, 3),
        client_ms_per_message=round(client / messages * 1000, 3),
        clients=PROCESSES * CONNECTIONS,
        settled=None if quiet is None else quiet.to_json(),
    )


async def declare_queue(url: str) -> None:
    """The durable quorum queue the measurement uses."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[0] != "worker" or argv[1] not in ("publish", "consume"):
        sys.stderr.write("usage: python -m bench.broker_limit worker publish|consume URL QUEUE COUNT CONNECTIONS\n")
        return 2
    _, phase, url, queue, count, connections = argv
    figures = asyncio.run(_worker(phase, url, queue, int(count), int(connections)))
    sys.stdout.write(json.dumps(figures) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
