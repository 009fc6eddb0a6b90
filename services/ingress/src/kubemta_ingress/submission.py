"""A message as a client handed it over, whichever protocol it came by: what SMTP (handler.py) and the HTTP API
(api_send.py) give `MailAcceptance.queue` (acceptance.py)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubemta.v1 import message_pb2
from kubemta_ingress.policy import IPAddress, ip_text
from kubemta_ingress.sender_identity import AuthenticatedUser


@dataclass(frozen=True, slots=True)
class Submission:
    """A message as a client handed it over, whichever protocol it came by."""

    sender: str
    """The envelope sender; "" for the null sender `<>`."""
    recipients: Sequence[str]
    content: bytes
    client: IPAddress | None
    helo: str | None
    user: AuthenticatedUser | None
    """Who the client proved to be (SMTP AUTH, an API key, a ServiceAccount token); None: nobody."""
    trust: "message_pb2.Trust.ValueType"
    listener: str
    """Where it came in: smtp, submission, smtps or api (the `received` event's `listener`)."""
    protocol: str
    """The `with` clause of the Received: header (ESMTPSA, HTTP, ...)."""
    smtputf8: bool = False
    tags: Sequence[str] = ()
    dedup_key: str | None = None
    """None: the content's own dedup key (dedup_key.py: a client's retry of the same message); the API sets
    `idem:<key>` for a request with an Idempotency-Key (its own check ran before: idempotency.py)."""
    recipient_dsn: Mapping[str, message_pb2.RecipientDsn] = field(default_factory=dict)
    """RFC 3461 NOTIFY and ORCPT by recipient, keyed as in `recipients` (AcceptedMessage.recipient_dsn)."""
    envid: str = ""
    """RFC 3461 ENVID, decoded; "" when none was given."""
    ret: "message_pb2.DsnRet.ValueType" = message_pb2.DSN_RET_UNSPECIFIED
    """RFC 3461 RET (AcceptedMessage.ret)."""

    @property
    def client_label(self) -> str:
        """The client's address for logs, or `unknown`."""
        return ip_text(self.client) if self.client is not None else "unknown"
