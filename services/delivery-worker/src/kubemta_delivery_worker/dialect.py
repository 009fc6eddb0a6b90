"""How a transport speaks on the one SMTP wire client: SMTP (RFC 5321) or its LMTP dialect (RFC 2033).

Like Postfix, whose lmtp(8) is its smtp(8) client with one flag, the worker has one
client (connection.py for the session, mail_transaction.py for the transaction, wire.py
for replies read in groups); a `Dialect` is the handful of places where LMTP differs:

- the greeting command: EHLO with a HELO fallback, or LHLO without one (RFC 2033 §4.1);
- after the final dot: one reply for every accepted recipient, in RCPT order, so each
  gets its own outcome (RFC 2033 §4.2), instead of one reply for all;
- the mailbox server is local or in-cluster: LMTP may go over a unix socket, its port is
  24, and it does no TLS (Postfix's `lmtp_tls_security_level` is empty by default), no
  pipelining and no connection reuse; a transaction that ends before DATA is RSET before
  the QUIT;
- the mailbox server is the final destination: a recipient it took is delivered, where an
  SMTP next hop only relays it (handoff.py: who sends the success DSN, RFC 3461 §4.1).
"""

from dataclasses import dataclass

from kubemta.v1 import message_pb2


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between SMTP and LMTP on the wire and in a session's life."""

    name: str
    hello: str  # the greeting command: EHLO or LHLO
    helo_fallback: bool  # RFC 5321 §3.2: HELO when EHLO is refused with 5xx
    default_port: int  # when a TCP route host carries no port
    starttls: bool  # the route's TLS policy step (STARTTLS, then relayhost AUTH)
    pipelining: bool  # RFC 2920 when the server offers it (and KUBEMTA_SMTP_PIPELINING)
    reply_per_recipient: bool  # RFC 2033 §4.2: one reply per accepted recipient after the final dot
    reset_after_refusal: bool  # RSET when a transaction ends before DATA
    counted: bool  # counted in kubemta_smtp_connections_total
    final_delivery: bool  # a recipient the server took is in its mailbox (handoff.py: HANDOFF_DELIVERED)

    def port(self, host: message_pb2.RouteHost) -> int:
        """The TCP port to connect to."""
        return host.port or self.default_port

    def label(self, host: message_pb2.RouteHost) -> str:
        """The unix socket path, or `name[address]:port` the way Postfix names a peer."""
        return host.unix_socket or f"{host.hostname or host.address}[{host.address}]:{self.port(host)}"

    def remote_mta(self, host: message_pb2.RouteHost) -> str:
        """The Remote-MTA of results (RFC 3464): the host name (or address), or the socket path."""
        return host.unix_socket or host.hostname.rstrip(".") or host.address

    def data_replies(self, accepted: list[str]) -> list[list[str]]:
        """The recipients each reply after the final dot answers, in the order the replies come."""
        return [[rcpt] for rcpt in accepted] if self.reply_per_recipient else [accepted]


# RFC 5321 §4.5.4 / IANA "smtp": port 25.
SMTP_DIALECT = Dialect(
    name="smtp",
    hello="EHLO",
    helo_fallback=True,
    default_port=25,
    starttls=True,
    pipelining=True,
    reply_per_recipient=False,
    reset_after_refusal=False,
    counted=True,
    final_delivery=False,
)

# RFC 2033; IANA "lmtp" / Postfix lmtp(8): port 24.
LMTP_DIALECT = Dialect(
    name="lmtp",
    hello="LHLO",
    helo_fallback=False,
    default_port=24,
    starttls=False,
    pipelining=False,
    reply_per_recipient=True,
    reset_after_refusal=True,
    counted=False,
    final_delivery=True,
)
