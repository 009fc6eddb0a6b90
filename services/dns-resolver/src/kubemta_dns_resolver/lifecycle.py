"""The dns-resolver's lifecycle events (events.proto): routed (its builder is shared with the queue-manager:
kubemta_common.events.routed_event), and what an operator's decision or a redelivery made of a job
(kubemta_common.events.job_events). Pure functions; the handler writes them after the publishes they describe
were confirmed."""

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events import job_events
from kubemta_common.events.job_events import job_event
from kubemta_common.events.routed_event import host_text, routed

__all__ = ["SERVICE", "deleted", "duplicate", "host_text", "routed"]

SERVICE = "dns-resolver"


def duplicate(job: message_pb2.DeliveryJob) -> events_pb2.LifecycleEvent:
    """A redelivered job that was already routed (not published again)."""
    return job_events.duplicate(job_event(job))


def deleted(
    job: message_pb2.DeliveryJob, decision: events_pb2.AdminDecision | None, *, dsn: bool
) -> events_pb2.LifecycleEvent:
    """An operator's decision deleted the job before it was routed."""
    return job_events.deleted(job, decision, job.recipients, dsn=dsn, stage=SERVICE)
