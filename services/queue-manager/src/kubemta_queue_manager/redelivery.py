"""Recognising a redelivered bus message the queue-manager already handled before it crashed.

A message comes again when the process that had it died after publishing its outputs but before
the acknowledgement reached the broker. Only then (the AMQP `redelivered` flag, or a quorum
queue's `x-delivery-count` above 0), and only with a tracker configured, the tracker is asked
whether the event that closes the work was recorded: `queued` for an accepted message, the
job's fate at that attempt for a result. True: the outputs are queued already, the message is
acknowledged without publishing them again (a `duplicate` event, kubemta_duplicates_total).
False or unknown (the tracker unreachable, slow or not in sync): handled as usual, at least once.
"""

from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import events_pb2
from kubemta_common.amqp.consumer import is_redelivery, return_if_unanswered
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.job_events import duplicate
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
        if self._tracker is None or delivery is None or not is_redelivery(delivery):
            return False
        if event.job_id:
            done = await self._tracker.recorded(kind, job_id=event.job_id, attempt=attempt)
        else:
            done = await self._tracker.recorded(kind, queue_id=event.queue_id)
        if done is None:
            return_if_unanswered(delivery, kind)  # raises while it may ask again later
        if done is not True:
            return False
        self._events.emit(duplicate(event))
        DUPLICATES.labels(stage=self._stage).inc()
        return True
