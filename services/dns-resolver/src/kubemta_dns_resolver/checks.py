"""What the resolver checks before routing a job: was it routed already (a redelivery after a crash),
and did an operator delete or hold it.

Redelivery: only for a redelivered job (the AMQP `redelivered` flag or a quorum queue's
`x-delivery-count` above 0) and with a tracker configured, the tracker is asked whether the job's
`routed` event at this attempt was recorded; True means its `deliver` message is queued already.
False or unknown (unreachable, slow, not in sync): routed as usual, at least once.

Decisions come from the `decisions` stream (kubemta_common.events.decisions); the first verdict
waits, a bounded time, until the follower read what the stream held at start, so a restarted
resolver honours the rules issued before.
"""

import asyncio
import logging
from datetime import datetime
from typing import Protocol

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp.consumer import returned_count
from kubemta_common.events.decisions import GO_ON, Verdict
from kubemta_common.timestamps import to_datetime

logger = logging.getLogger(__name__)

READY_WAIT = 30.0
"""Longest wait for the decisions follower to catch up before the first verdict (it gives up sooner itself)."""


class DuplicateChecks(Protocol):
    """What the resolver asks the tracker (kubemta_common.events.tracker_client.TrackerClient)."""

    async def recorded(
        self, kind: str, *, queue_id: str = "", job_id: str = "", attempt: int | None = None
    ) -> bool | None: ...


class DecisionView(Protocol):
    """What a verdict needs (kubemta_common.events.decisions.Decisions)."""

    def verdict(self, *, queue_id: str, sender: str, domain: str, arrival: datetime) -> Verdict: ...


def is_redelivery(delivery: AbstractIncomingMessage) -> bool:
    """True when the broker delivered this message before (to a consumer that did not acknowledge it)."""
    return bool(delivery.redelivered) or returned_count(delivery) > 0


class JobChecks:
    """The tracker and the operators' decisions, as the route handler consults them (both optional)."""

    def __init__(
        self,
        tracker: DuplicateChecks | None = None,
        decisions: DecisionView | None = None,
        decisions_ready: asyncio.Event | None = None,
    ) -> None:
        self._tracker = tracker
        self._decisions = decisions
        self._ready = decisions_ready

    async def already_routed(self, job: message_pb2.DeliveryJob, delivery: AbstractIncomingMessage | None) -> bool:
        """True when `delivery` is a redelivery of a job whose `routed` event was recorded at this attempt."""
        if self._tracker is None or delivery is None or not is_redelivery(delivery):
            return False
        return await self._tracker.recorded("routed", job_id=job.job_id, attempt=job.attempts) is True

    async def verdict(self, job: message_pb2.DeliveryJob) -> Verdict:
        """DELETE, HOLD or NONE for `job` (its message's queue id, sender, arrival, and its domain)."""
        if self._decisions is None:
            return GO_ON
        if self._ready is not None and not self._ready.is_set():
            try:
                async with asyncio.timeout(READY_WAIT):
                    await self._ready.wait()
            except TimeoutError:
                logger.warning("decisions not read within %.0fs; going on with what was read", READY_WAIT)
        return self._decisions.verdict(
            queue_id=job.queue_id, sender=job.sender, domain=job.domain, arrival=to_datetime(job.arrival_time)
        )
