"""The `received` lifecycle event of a message the ingress queued (docs/tracking.md)."""

from kubemta.v1 import events_pb2, message_pb2
from kubemta_ingress.message_id import event_headers


def received_event(head: message_pb2.AcceptedMessage, size: int, content: bytes) -> events_pb2.LifecycleEvent:
    """The `received` event of an accepted message: its envelope, client, trust, arrival, dedup key, listener,
    and the header block the client sent (at most 16 KiB); `size` is the bytes queued. Its time is the arrival:
    emitted only after the broker's confirm, it would otherwise come after the queue-manager's `queued`, which
    may be recorded within the confirm's round trip."""
    event = events_pb2.LifecycleEvent(queue_id=head.queue_id, message_id=head.message_id)
    event.time.CopyFrom(head.arrival_time)
    received = event.received
    received.sender = head.sender
    received.recipients.extend(head.recipients)
    received.size = size
    received.client_address = head.client_address
    received.client_helo = head.client_helo
    received.authenticated_user = head.authenticated_user
    received.trust = head.trust
    received.arrival_time.CopyFrom(head.arrival_time)
    received.headers = event_headers(content)
    received.dedup_key = head.dedup_key
    received.listener = head.listener
    return event
