"""The transport registry: a route's kind -> its transport. A new transport is one module defining a
`Transport` (transport.py) and one entry here."""

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import lmtp, smtp
from kubemta_delivery_worker.transport import Transport

TRANSPORTS: dict[message_pb2.TransportKind.ValueType, Transport] = {
    transport.kind: transport for transport in (smtp.TRANSPORT, lmtp.TRANSPORT)
}


def transport_for(kind: message_pb2.TransportKind.ValueType) -> Transport:
    """The transport of a route of `kind`; SMTP for a route that names none (TRANSPORT_KIND_UNSPECIFIED)."""
    return TRANSPORTS.get(kind, smtp.TRANSPORT)
