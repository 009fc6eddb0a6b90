"""LMTP (RFC 2033) to a mailbox server, over TCP or a unix socket: the SMTP client in its LMTP
dialect (dialect.LMTP_DIALECT): greeting, LHLO, MAIL FROM, RCPT per recipient, DATA, then one reply per
accepted recipient, QUIT.

LMTP differs from SMTP where it matters here (RFC 2033 §4.2): after the final dot the
server answers once for every recipient it accepted at RCPT, in RCPT order, so each
recipient gets its own outcome (2xx delivered, 4xx temporary, 5xx permanent). A
connection lost or timed out after the dot leaves the recipients not yet answered
with an unknown fate: they are deferred (4.4.2) and a line warns that a duplicate is
possible; those already answered keep their answer (mail_transaction.py, wire.py).

Plain text only: the mailbox server is local or in-cluster, and Postfix's LMTP client
does no TLS by default either (`lmtp_tls_security_level` is empty). No connection reuse.
"""

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.dialect import LMTP_DIALECT
from kubemta_delivery_worker.mail_transaction import HostAttempt
from kubemta_delivery_worker.smtp_options import SmtpOptions
from kubemta_delivery_worker.transport import Transport

# Port 24 (IANA "lmtp", Postfix lmtp(8) default) when a TCP route host carries none.
LMTP_PORT = LMTP_DIALECT.default_port

TRANSPORT = Transport(kind=message_pb2.TRANSPORT_KIND_LMTP, dialect=LMTP_DIALECT, pooled=False)


def lmtp_label(host: message_pb2.RouteHost) -> str:
    """The unix socket path, or `name[address]:port`."""
    return LMTP_DIALECT.label(host)


async def attempt_lmtp_host(
    host: message_pb2.RouteHost, job: message_pb2.DeliveryJob, recipients: list[str], options: SmtpOptions
) -> HostAttempt:
    """Deliver `job` to `recipients` through the LMTP server `host`; never raises for LMTP or network failures."""
    return await TRANSPORT.attempt(host, job, recipients, options)
