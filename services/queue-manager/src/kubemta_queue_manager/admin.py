"""Operators' decisions (delete, hold) as the queue-manager honours them on a delivery result.

The decisions come from the `decisions` stream (kubemta_common.events.decisions: a
`DecisionFollower` keeps a `Decisions` view current). Before the first verdict the handler
waits, a bounded time, until the follower read what the stream held when the service started,
so a restarted queue-manager honours the rules issued before.
"""

import asyncio
import logging
from datetime import datetime
from typing import Protocol

from kubemta.v1 import message_pb2
from kubemta_common.events.decisions import GO_ON, Verdict
from kubemta_common.timestamps import to_datetime

logger = logging.getLogger(__name__)

READY_WAIT = 30.0
"""Longest wait for the decisions follower to catch up before the first verdict (it gives up sooner itself)."""


class DecisionView(Protocol):
    """What a verdict needs (kubemta_common.events.decisions.Decisions)."""

    def verdict(self, *, queue_id: str, sender: str, domain: str, arrival: datetime) -> Verdict: ...


class Orders:
    """The operators' verdict on a job, once the decisions were read (no decisions: never any)."""

    def __init__(self, decisions: DecisionView | None, ready: asyncio.Event | None = None) -> None:
        self._decisions = decisions
        self._ready = ready

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
