"""The dns-resolver's lifecycle events (events.proto): routed, and what an operator's decision or a
redelivery made of a job (kubemta_common.events.job_events). Pure functions; the handler writes them after
the publishes they describe were confirmed."""

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events import job_events
from kubemta_common.events.job_events import job_event

SERVICE = "dns-resolver"


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
    return job_events.duplicate(job_event(job))


def deleted(
    job: message_pb2.DeliveryJob, decision: events_pb2.AdminDecision | None, *, dsn: bool
) -> events_pb2.LifecycleEvent:
    """An operator's decision deleted the job before it was routed."""
    return job_events.deleted(job, decision, job.recipients, dsn=dsn, stage=SERVICE)
