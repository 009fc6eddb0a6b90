"""One stage of kubemta measured alone: the ingress under smtp-source, or a stage draining its full input queue.

The stages run one after the other on one vhost of their own (per process count), each
alone while it is measured, so the bus messages every stage drains are real ones, made by
kubemta's own previous stage and publisher:

1. ingress: smtp-source (`sessions` sessions, one 1 KiB message per connection) into the
   ingress alone, with KUBEMTA_ROUTE_SHORTCUT off; nothing consumes `inbound`, which fills.
   msgs/s = accepted / smtp-source's wall time; CPU over that time. Its FRESH variant runs
   with the shortcut on once the resolver's answer is in the `routes` stream: the messages'
   jobs go straight to `deliver` (kubemta_ingress.direct_jobs; any that came before the
   ingress had read the streams go to `inbound`, and both count).
2. queue-manager, dns-resolver, delivery-worker: started on the queue the previous stage
   filled (`inbound`, `route`, `deliver`), nothing after them running. Their outputs (every
   queue the stage may publish to, or for the worker the smtp-sink's count) are read every
   0.1 s over AMQP (bench.bus_depths); the window starts when every process of the stage
   answers /readyz (start-up CPU left out) and ends when the outputs hold one message per
   input message. msgs/s = outputs made in the window / its length; CPU = the stage's
   processes' utime+stime (summed) and beam.smp's over the window, per message.

Whatever the stage's outputs are (a job may go from the queue-manager straight to
`deliver`, a delivered job may publish no result), the outputs counted are all of them, so
the figure is each stage's drain of its input, not of a particular next hop.
"""

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import rabbitmq
from bench.bus_depths import BusDepths
from bench.config import BenchConfig
from bench.kubemta_stack import KubemtaStack
from bench.procstats import cpu_seconds
from bench.settle import Settled
from bench.sink import Sink
from bench.source import run_source
from bench.systems import transport_to
from tests.harness.ports import free_port
from tests.harness.rabbitmq import BrokerNode

SIZE = 1024
FRESH = "route answers fresh"  # the ingress' and queue-manager's variant with the resolver's answers in `routes`
LONG_PATH = {"KUBEMTA_ROUTE_SHORTCUT": "false"}
"""The ingress of the plain run: every message to `inbound`, whatever the `routes` stream holds."""
POLL_SECONDS = 0.1
STAGE_QUEUES = ("inbound", "route", "deliver", "results")
INPUT = {"queue-manager": "inbound", "dns-resolver": "route", "delivery-worker": "deliver"}
OUTPUTS = {  # the queues each stage may publish a drained message's successor to (and their large lanes)
    "ingress": ("inbound",),
    "queue-manager": ("route", "deliver"),
    "dns-resolver": ("deliver", "results"),
    "delivery-worker": (),  # the sink's count
}


@dataclass
class StageResult:
    """The figures of one stage with a number of processes."""

    stage: str
    processes: int
    messages: int
    seconds: float
    rate: float  # messages per second, all processes together
    rate_per_process: float
    cpu_ms_per_message: float | None  # the stage's processes together
    broker_ms_per_message: float | None  # beam.smp
    settled: dict[str, Any] | None = None
    error: str | None = None
    variant: str = ""  # e.g. the queue-manager with the resolver's route answers fresh (bench.stages)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lanes(queues: tuple[str, ...]) -> tuple[str, ...]:
    """The queues and their large lanes."""
    return (*queues, *(f"{queue}.large" for queue in queues))


def result(
    stage: str, processes: int, messages: int, seconds: float, cpu: float, beam: float, quiet: Settled | None
) -> StageResult:
    """A StageResult from what one window measured."""
    rate = messages / seconds if seconds > 0 else 0.0
    return StageResult(
        stage=stage,
        processes=processes,
        messages=messages,
        seconds=round(seconds, 3),
        rate=round(rate, 1),
        rate_per_process=round(rate / processes, 1),
        cpu_ms_per_message=round(cpu / messages * 1000, 3) if messages else None,
        broker_ms_per_message=round(beam / messages * 1000, 3) if messages else None,
        settled=None if quiet is None else quiet.to_json(),
    )


def failed(stage: str, processes: int, error: str) -> StageResult:
    return StageResult(stage, processes, 0, 0.0, 0.0, 0.0, None, None, error=error)


class StageBench:
    """The vhost, sink and options the stages of one process count share."""

    def __init__(
        self,
        config: BenchConfig,
        workdir: Path,
        vhost: str,
        sink: Sink,
        address: str,
        node: BrokerNode | None = None,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.vhost = vhost
        self.url = rabbitmq.amqp_url(vhost, node)
        self.sink = sink
        self.address = address
        self.beam = rabbitmq.beam_pid(node)

    def stack(self, stage: str, processes: int, port: int, env: dict[str, str] | None = None) -> KubemtaStack:
        return KubemtaStack(
            self.workdir,
            amqp_url=self.url,
            smtp_address=self.address,
            smtp_port=port,
            transports=transport_to(self.sink),
            log_level=self.config.kubemta_log_level,
            services=(stage,),
            processes={stage: processes},
            ingress_processes=processes if stage == "ingress" else 1,
            extra_env={**self.config.kubemta_env, **(env or {})},
        )

    async def ingress(self, processes: int, count: int, quiet: Settled | None, variant: str = "") -> StageResult:
        """smtp-source into the ingress alone: `count` messages of 1 KiB; `inbound` fills (the FRESH variant:
        `deliver`, and `inbound` for any message that came before the ingress had read the streams)."""
        port = free_port(self.address)
        stack = self.stack("ingress", processes, port, env=None if variant == FRESH else LONG_PATH)
        outputs = lanes(("inbound", "deliver") if variant == FRESH else OUTPUTS["ingress"])
        try:
            await stack.start()
            pids = stack.pids()["ingress"]
            cpu_before, beam_before = cpu_seconds(pids), cpu_seconds([self.beam])
            source = await run_source(
                self.address,
                port,
                count=count,
                size=SIZE,
                sessions=self.config.sessions,
                keep_sessions=self.config.keep_sessions,
                log_path=self.workdir / f"smtp-source-{processes}.out",
            )
            cpu, beam = cpu_seconds(pids) - cpu_before, cpu_seconds([self.beam]) - beam_before
        finally:
            await asyncio.to_thread(stack.stop)
        if source.returncode != 0 or source.accepted != count:
            return failed("ingress", processes, f"smtp-source {source.returncode}: {source.output_tail}")
        async with BusDepths(self.url) as depths:
            queued = await depths.total(outputs)
        measured = result("ingress", processes, source.accepted, source.wall_seconds, cpu, beam, quiet)
        measured.variant = variant
        if queued < source.accepted:
            measured.error = f"{', '.join(outputs)} hold {queued} of the {source.accepted} messages accepted"
        return measured

    async def _outputs(self, depths: BusDepths, stage: str) -> int:
        if stage == "delivery-worker":
            return self.sink.messages()
        return await depths.total(lanes(OUTPUTS[stage]))

    async def drain(self, stage: str, processes: int, quiet: Settled | None, variant: str = "") -> StageResult:
        """Start `processes` of `stage` on its filled input queue; the window from all ready to all drained."""
        async with BusDepths(self.url) as depths:
            expected = await depths.total(lanes((INPUT[stage],)))
            outputs_before = await self._outputs(depths, stage)
            if expected == 0:
                return failed(
                    stage, processes, f"nothing reached {INPUT[stage]}: the stage before failed or bypassed it"
                )
            within = self.config.drain_timeout + expected / 20
            stack = self.stack(stage, processes, free_port(self.address))
            try:
                await stack.start()
                pids = stack.pids()[stage]
                start = time.monotonic()
                cpu_before, beam_before = cpu_seconds(pids), cpu_seconds([self.beam])
                made_before = await self._outputs(depths, stage) - outputs_before
                made = made_before
                while made < expected:
                    if time.monotonic() - start > within:
                        return failed(stage, processes, f"{made} of {expected} drained within {within:.0f} s")
                    stack.check_alive()
                    await asyncio.sleep(POLL_SECONDS)
                    made = await self._outputs(depths, stage) - outputs_before
                seconds = time.monotonic() - start
                cpu, beam = cpu_seconds(pids) - cpu_before, cpu_seconds([self.beam]) - beam_before
            finally:
                await asyncio.to_thread(stack.stop)
        measured = result(stage, processes, made - made_before, seconds, cpu, beam, quiet)
        measured.variant = variant
        return measured
