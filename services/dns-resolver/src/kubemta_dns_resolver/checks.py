"""What the resolver checks before routing a job: was it routed already (a redelivery after a crash),
and did an operator delete or hold it.

Redelivery: only for a redelivered job (the AMQP `redelivered` flag or a quorum queue's
`x-delivery-count` above 0) and with a tracker configured, the tracker is asked whether the job's
`routed` event at this attempt was recorded; True means its `deliver` message is queued already.
False or unknown (unreachable, slow, not in sync): routed as usual, at least once.

Decisions come from the `decisions` stream (kubemta_common.events.decisions); the first verdict
waits, a bounded time, until the follower read what the stream held at start, so a restarted
resolver honours the rules issued before (`JobVerdicts`).
"""

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import DecisionView
from kubemta_common.events.redelivery import already_recorded
from kubemta_common.events.tracker_client import DuplicateChecks


class JobChecks(JobVerdicts):
    """The tracker and the operators' decisions, as the route handler consults them (both optional)."""

    def __init__(
        self,
        tracker: DuplicateChecks | None = None,
        decisions: DecisionView | None = None,
        decisions_ready: asyncio.Event | None = None,
    ) -> None:
        super().__init__(decisions, decisions_ready)
        self._tracker = tracker

    async def already_routed(self, job: message_pb2.DeliveryJob, delivery: AbstractIncomingMessage | None) -> bool:
        """True when `delivery` is a redelivery (or the job a possible second copy: DeliveryJob.maybe_duplicate) of a
        job whose `routed` event was recorded at this attempt."""
        return await already_recorded(
            self._tracker,
            delivery,
            "routed",
            flagged=job.maybe_duplicate,
            job_id=job.job_id,
            attempt=job.attempts,
        )
