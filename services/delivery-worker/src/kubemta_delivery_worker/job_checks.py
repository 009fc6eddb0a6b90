"""Checks of a DeliveryJob before it is delivered: what no producer on the bus sends.

Every job on `deliver` comes from the dns-resolver, which publishes a route only when it
found at least one host (no route at all goes to `results` as a RouteFailure instead),
and from the queue-manager's split, which gives every job a domain and its recipients.
A job that breaks one of these rules was not made by kubemta as it is (a bug, an older
or foreign producer, a hand-made message): delivering it would fail the same way every
time, or crash the handler, so the handler holds it instead.
"""

from kubemta.v1 import message_pb2
from kubemta_common.logs import sanitize

MAX_PORT = 65535
"""RFC 9293 §3.1: TCP ports are 16-bit. A route host's port 0 means the default port."""


def malformation(job: message_pb2.DeliveryJob) -> str | None:
    """Why `job` cannot be delivered as it is, or None when it passes every check."""
    if not job.domain:
        return "the job has no domain"
    if not job.recipients:
        return "the job has no recipients"
    if not job.route.hosts:
        return "the route has no hosts"
    for position, host in enumerate(job.route.hosts, start=1):
        if host.port > MAX_PORT:
            name = sanitize(host.hostname or host.address or host.unix_socket)
            return f"route host {position} ({name}) has port {host.port}, outside 0..{MAX_PORT}"
    return None
