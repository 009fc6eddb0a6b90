"""The dns-resolver's lifecycle events (events.proto): routed, and what an operator's decision or a
redelivery made of a job. Pure functions; the handler writes them after the publishes they describe
were confirmed."""

from kubemta.v1 import events_pb2, message_pb2

SERVICE = "dns-resolver"
REDELIVERED_INPUT = "redelivered-input"


def job_event(job: message_pb2.DeliveryJob) -> events_pb2.LifecycleEvent:
    """An event about one job, at its current attempt."""
    return events_pb2.LifecycleEvent(
        queue_id=job.queue_id, message_id=job.message_id, job_id=job.job_id, attempt=job.attempts
    )


def host_text(host: message_pb2.RouteHost) -> str:
    """One next hop as "hostname[address]:port" (or its unix socket path)."""
    return host.unix_socket or f"{host.hostname}[{host.address}]:{host.port}"


def routed(job: message_pb2.DeliveryJob, route: message_pb2.Route) -> events_pb2.LifecycleEvent:
    """The job was routed and queued to `deliver`."""
    event = job_event(job)
    body = event.routed
    body.domain = job.domain
    body.kind = route.kind
    body.source = route.source
    body.hosts.extend(host_text(host) for host in route.hosts)
    body.tls_policy = route.tls_policy
    body.tls_policy_source = route.tls_policy_source
    body.provider = route.provider
    return event


def duplicate(job: message_pb2.DeliveryJob) -> events_pb2.LifecycleEvent:
    """A redelivered job that was already routed (not published again)."""
    event = job_event(job)
    event.duplicate.reason = REDELIVERED_INPUT
    event.duplicate.first_queue_id = job.queue_id
    return event


def deleted(
    job: message_pb2.DeliveryJob, decision: events_pb2.AdminDecision | None, *, dsn: bool
) -> events_pb2.LifecycleEvent:
    """An operator's decision deleted the job before it was routed."""
    event = job_event(job)
    event.deleted.stage = SERVICE
    event.deleted.dsn_requested = dsn
    event.deleted.recipients.extend(job.recipients)
    if decision is not None:
        event.deleted.decision_id = decision.decision_id
        event.deleted.actor = decision.actor
    return event


def held(
    job: message_pb2.DeliveryJob, decision: events_pb2.AdminDecision | None, *, release_to: str
) -> events_pb2.LifecycleEvent:
    """An operator's decision held the job on `held`; a release sends it to `release_to`."""
    event = job_event(job)
    event.held.reason = "admin"
    event.held.release_to = release_to
    if decision is not None:
        event.held.decision_id = decision.decision_id
        event.held.actor = decision.actor
    return event
