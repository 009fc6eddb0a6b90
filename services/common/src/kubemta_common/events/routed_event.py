"""The `routed` lifecycle event (events.proto): a job got its route and was queued to `deliver`.

Two writers, one builder: the dns-resolver for each job it routes, and the queue-manager for a first-attempt
job it sends straight to `deliver` with the resolver's fresh answer (kubemta_common.route_answers). Either
records it only after the `deliver` publish was confirmed: a redelivered job whose `routed` event is recorded
is known to be queued already (kubemta_common.events.redelivery).
"""

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events.job_events import job_event


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
