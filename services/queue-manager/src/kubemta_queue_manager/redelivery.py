"""Recognising a redelivered bus message the queue-manager already handled before it crashed.

The question (kubemta_common.events.redelivery) is `queued` for an accepted message and the job's
fate at that attempt for a result. True: the outputs are queued already, the message is
acknowledged without publishing them again (a `duplicate` event, kubemta_duplicates_total).
"""

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.job_events import duplicate
from kubemta_common.events.redelivery import already_recorded
from kubemta_common.events.tracker_client import DuplicateChecks
from kubemta_common.metrics import DUPLICATES


class RedeliveryGuard:
    """Asks the tracker, for a redelivered input only, whether its work was already done."""

    def __init__(self, tracker: DuplicateChecks | None, events: EventSink, *, stage: str) -> None:
        self._tracker = tracker
        self._events = events
        self._stage = stage

    async def already_done(
        self,
        delivery: AbstractIncomingMessage | None,
        event: events_pb2.LifecycleEvent,
        kind: str,
        *,
        attempt: int | None = None,
    ) -> bool:
        """True when `delivery` is a redelivery whose `kind` event (for `event`'s queue id or job id) was recorded:
        then a `duplicate` event (`event` filled in) is emitted and counted."""
        if not await already_recorded(
            self._tracker, delivery, kind, queue_id=event.queue_id, job_id=event.job_id, attempt=attempt
        ):
            return False
        self._events.emit(duplicate(event))
        DUPLICATES.labels(stage=self._stage).inc()
        return True
