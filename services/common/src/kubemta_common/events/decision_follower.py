"""Following the operators' decisions: a service keeps its `Decisions` view (decisions.py) up to date
from the `decisions` stream, and its handlers ask it about one DeliveryJob.

`DecisionFollower` reads the stream with a `StreamReader` from its first record; `ready` is set
once it read what the stream held when it started (or after a bounded wait), so a restarted
service honours the rules issued before. `BackgroundFollower` runs one as a service's background
task.

`JobVerdicts` is what a service's handler asks about one DeliveryJob: it waits (bounded) for that
`ready` before the first verdict, then asks the view (none configured: always GO_ON).
"""

import asyncio
import logging

from google.protobuf.message import DecodeError

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import DECISIONS
from kubemta_common.background_task import cancel_and_wait
from kubemta_common.events.decisions import GO_ON, Decisions, DecisionView, Verdict, describe
from kubemta_common.events.stream_reader import StreamReader, StreamRecord
from kubemta_common.timestamps import to_datetime

logger = logging.getLogger(__name__)

READY_WITHIN = 10.0
"""Longest a `DecisionFollower` waits to have read the stream before `ready` is set anyway."""
READY_WAIT = 30.0
"""Longest a `JobVerdicts` waits for its follower to catch up before the first verdict (the follower gives up
sooner itself, after READY_WITHIN: this bound is a second guard)."""


class JobVerdicts:
    """The operators' verdict on a DeliveryJob, once the rules issued before the start were read (`ready`, the
    follower's event; waited for at most `ready_within` seconds). Without `decisions`: never any (GO_ON)."""

    def __init__(
        self, decisions: DecisionView | None, ready: asyncio.Event | None = None, ready_within: float = READY_WAIT
    ) -> None:
        self._decisions = decisions
        self._ready = ready
        self._ready_within = ready_within

    async def verdict(self, job: message_pb2.DeliveryJob) -> Verdict:
        """DELETE, HOLD or NONE for `job` (its message's queue id, sender, arrival, and its domain)."""
        if self._decisions is None:
            return GO_ON
        if self._ready is not None and not self._ready.is_set():
            try:
                async with asyncio.timeout(self._ready_within):
                    await self._ready.wait()
            except TimeoutError:
                logger.warning("decisions not read within %.0fs; going on with what was read", self._ready_within)
        return self._decisions.verdict(
            queue_id=job.queue_id,
            sender=job.sender,
            domain=job.domain,
            arrival=to_datetime(job.arrival_time),
            released_at=to_datetime(job.released_at) if job.HasField("released_at") else None,
        )


class DecisionFollower:
    """Keeps a `Decisions` up to date from the `decisions` stream (a StreamReader from "first")."""

    def __init__(self, broker: Broker, decisions: Decisions, *, ready_within: float = READY_WITHIN) -> None:
        self.decisions = decisions
        self._reader = StreamReader(
            broker, DECISIONS, self._handle, start="first", prefetch=200, caught_up_within=ready_within
        )

    @property
    def ready(self) -> asyncio.Event:
        """Set once the rules the stream held at the start are applied (or after `ready_within`)."""
        return self._reader.caught_up

    async def run(self) -> None:
        """Follow the stream until cancelled."""
        await self._reader.run()

    async def _handle(self, records: list[StreamRecord]) -> None:
        for record in records:
            decision = events_pb2.AdminDecision()
            try:
                decision.ParseFromString(record.body)
            except DecodeError:
                logger.warning("ignoring an undecodable admin decision at offset %d", record.offset)
                continue
            logger.info("admin decision %s", describe(decision))
            self.decisions.apply(decision)


class BackgroundFollower:
    """A service's follower of the operators' decisions: `start(broker)` runs a `DecisionFollower` of `decisions`
    (a new `Decisions(max_age)`) as a background task (named "kubemta-decisions"), `stop()` cancels and awaits
    it."""

    def __init__(self, max_age: float) -> None:
        self.decisions = Decisions(max_age)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, broker: Broker) -> DecisionFollower:
        """Start following the `decisions` stream on `broker`; the follower's `ready` tells when it caught up."""
        follower = DecisionFollower(broker, self.decisions)
        self._tasks.append(asyncio.create_task(follower.run(), name="kubemta-decisions"))
        return follower

    async def stop(self) -> None:
        """Stop following (what was read stays in `decisions`)."""
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
