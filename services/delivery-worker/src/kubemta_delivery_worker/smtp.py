"""SMTP (RFC 5321) to MX hosts, relayhosts and `smtp:` transports: the TLS policy step, relayhost
AUTH, pipelining and connection reuse (dialect.SMTP_DIALECT); the default for a route of no known kind."""

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.dialect import SMTP_DIALECT
from kubemta_delivery_worker.transport import Transport

TRANSPORT = Transport(kind=message_pb2.TRANSPORT_KIND_SMTP, dialect=SMTP_DIALECT, pooled=True)
