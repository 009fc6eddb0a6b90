"""The `queued` lifecycle event (events.proto): a message's jobs were all queued.

Two writers, one builder: the queue-manager for a message it split from `inbound`, and the ingress for a
message whose one job it queued straight to `deliver` (kubemta_ingress.direct_jobs). Either writes it only after
the jobs' publishes were confirmed.
"""

from collections.abc import Iterable

from kubemta.v1 import events_pb2, message_pb2


def queued(accepted: message_pb2.AcceptedMessage, jobs: Iterable[events_pb2.QueuedJob]) -> events_pb2.LifecycleEvent:
    """The message's jobs were all queued (to `route`, or to `deliver` with a fresh route answer)."""
    event = events_pb2.LifecycleEvent(queue_id=accepted.queue_id, message_id=accepted.message_id)
    event.queued.SetInParent()
    if accepted.dedup_key and not accepted.generated:
        event.queued.dedup_key = accepted.dedup_key
        event.queued.arrival_time.CopyFrom(accepted.arrival_time)
    event.queued.jobs.extend(jobs)  # copies, made in C (the entries the publisher kept for each job it published)
    return event
