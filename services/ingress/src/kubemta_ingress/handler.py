"""The SMTP transaction decisions: who may send, to whom, and queueing the message.

aiosmtpd calls these hooks (docs/handlers.rst); per-connection state lives on its
`Session`, per-transaction state on its `Envelope`. A message is answered
`250 2.0.0 Ok: queued as <id>` only after the broker confirmed the publish; if it
did not, the client gets `451 4.3.0` and retries (ARCHITECTURE.md, "No confirm, no 250").

Relay is granted by authentication or by the relay networks (policy.py). An
authenticated user may only use its own sender identities, in the envelope at MAIL
and in the author headers at DATA (sender_identity.py). AUTH PLAIN and LOGIN come
from `AuthMechanisms` (auth.py).
"""

import logging
import time
from datetime import UTC, datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.bus_messages import Encoded, encoded_with_field
from kubemta_common.errors import MessageTooLarge, PublishFailed
from kubemta_common.logs import message_context, sanitize
from kubemta_common.queue_id import new_queue_id
from kubemta_ingress import metrics, replies
from kubemta_ingress.auth import AuthMechanisms
from kubemta_ingress.content import content_problem, received_count, refusal
from kubemta_ingress.policy import AddressProblem, RelayPolicy, check_address, client_ip
from kubemta_ingress.received import protocol_name, received_header
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.sender_identity import AuthenticatedUser, HeaderProblem, author_problem
from kubemta_ingress.submission_headers import with_missing_headers

MAX_HOPS_DEFAULT = 100  # RFC 5321 section 6.3: a loop limit SHOULD be at least 100 Received: headers
POSTMASTER = "postmaster"  # RFC 5321 section 4.5.1; bare, it means this system's: postmaster@KUBEMTA_HOSTNAME
logger = logging.getLogger(__name__)

NULL_SENDER = "<>"  # how aiosmtpd passes MAIL FROM:<> (RFC 5321 section 4.5.5)

# Sender authorization replies (Postfix' reject_sender_login_mismatch wording; RFC 3463 5.7.1).
SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by user {user}"
FROM_NOT_OWNED = "550 5.7.1 From header not owned by user"
MULTIPLE_FROM = "550 5.7.1 Message has multiple From headers"
NO_FROM = "550 5.7.1 Message has no From header"
SENDER_HEADER_NOT_OWNED = "550 5.7.1 Sender header not owned by user"
MULTIPLE_SENDER = "550 5.7.1 Message has multiple Sender headers"
HEADER_REPLIES: dict[HeaderProblem, tuple[Reason, str]] = {
    HeaderProblem.NO_FROM: (Reason.FROM_NOT_OWNED, NO_FROM),
    HeaderProblem.MULTIPLE_FROM: (Reason.MULTIPLE_FROM, MULTIPLE_FROM),
    HeaderProblem.FROM_NOT_OWNED: (Reason.FROM_NOT_OWNED, FROM_NOT_OWNED),
    HeaderProblem.MULTIPLE_SENDER: (Reason.FROM_NOT_OWNED, MULTIPLE_SENDER),
    HeaderProblem.SENDER_NOT_OWNED: (Reason.FROM_NOT_OWNED, SENDER_HEADER_NOT_OWNED),
}


def client_label(session: Session) -> str:
    """The client's IP address for logs, or `unknown`."""
    address = client_ip(session.peer)
    return str(address) if address is not None else "unknown"


def text_field(value: str | None) -> str:
    """Client text made valid UTF-8 for a protobuf string (aiosmtpd keeps bad bytes as surrogates)."""
    return (value or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def authenticated_user(session: Session) -> AuthenticatedUser | None:
    """The user an authenticated session belongs to; a session authenticated otherwise owns nothing."""
    if not session.authenticated:
        return None
    user = session.auth_data
    return user if isinstance(user, AuthenticatedUser) else AuthenticatedUser("unknown", ())


class IngressHandler(AuthMechanisms):
    """aiosmtpd handler: AUTH, relay policy, sender authorization and limits, content checks and queueing."""

    def __init__(
        self,
        *,
        hostname: str,
        policy: RelayPolicy,
        max_recipients: int,
        max_message_size: int,
        publisher: BusPublisher,
        max_hops: int = MAX_HOPS_DEFAULT,
        recipients: RecipientVerifier | None = None,
    ) -> None:
        self._hostname = hostname
        self._recipients = recipients  # None: every local part of a local domain is accepted
        self._max_hops = max_hops
        self._policy = policy
        self._max_recipients = max_recipients
        self._max_message_size = max_message_size
        self._publisher = publisher

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return replies.ehlo_response(responses, self._max_message_size)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if address != NULL_SENDER:
            problem = check_address(address, smtputf8=envelope.smtp_utf8)
            if problem is not None:
                reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_SENDER
                return self._reject(Reason.BAD_ADDRESS, reply, session, sender=text_field(address))
        user = authenticated_user(session)
        if user is not None and (address == NULL_SENDER or not user.owns(address)):
            reply = SENDER_NOT_OWNED.format(user=user.name)
            return self._reject(Reason.SENDER_NOT_OWNED, reply, session, sender=text_field(address), user=user.name)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        sender = text_field(envelope.mail_from)
        postmaster = address.lower() == POSTMASTER
        if postmaster:  # RFC 5321 section 4.5.1: <Postmaster> without a domain MUST be accepted
            address = f"{POSTMASTER}@{self._hostname}"
        problem = check_address(address, smtputf8=envelope.smtp_utf8)
        if problem is not None:
            reply = replies.NEEDS_SMTPUTF8 if problem is AddressProblem.NEEDS_SMTPUTF8 else replies.BAD_RECIPIENT
            return self._reject(Reason.BAD_ADDRESS, reply, session, sender=sender, recipient=text_field(address))
        if address in envelope.rcpt_tos:
            return replies.RECIPIENT_OK  # a duplicate is accepted once (as Postfix' cleanup does)
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return self._reject(
                Reason.TOO_MANY_RECIPIENTS, replies.TOO_MANY_RECIPIENTS, session, sender=sender, recipient=address
            )
        client = client_ip(session.peer)
        if not postmaster and not self._policy.accepts(address, client, authenticated=bool(session.authenticated)):
            reply = replies.RELAY_DENIED.format(address=address)
            return self._reject(Reason.RELAY_DENIED, reply, session, sender=sender, recipient=address)
        if not postmaster and self._recipients is not None:  # local recipients, for trusted clients too
            refusal = await self._recipients.verify(address)
            if refusal is not None:
                return self._reject(refusal.reason, refusal.reply, session, sender=sender, recipient=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        try:
            return await self._queue(session, envelope)
        except Exception:
            logger.exception("failed to queue a message", extra={"client": client_label(session)})
            return self._reject(Reason.INTERNAL_ERROR, replies.INTERNAL_ERROR, session)
        finally:
            metrics.ACCEPT_DURATION.observe(time.monotonic() - started)

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP command failed: %r", error, exc_info=error)
        return replies.INTERNAL_ERROR

    async def _queue(self, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content
        assert content is not None, "aiosmtpd calls handle_DATA with the content read"
        sender = "" if envelope.mail_from == NULL_SENDER else text_field(envelope.mail_from)
        problem = content_problem(content)
        if problem is not None:
            reason, reply = refusal(problem)
            return self._reject(reason, reply, session, sender=sender)
        hops = received_count(content)
        if hops >= self._max_hops:  # with the Received header added here it would be one more than allowed
            reply = replies.TOO_MANY_HOPS.format(count=hops, limit=self._max_hops)
            return self._reject(Reason.MAIL_LOOP, reply, session, sender=sender, hops=hops)
        user = authenticated_user(session)
        author = author_problem(content, user) if user is not None else None
        if user is not None and author is not None:
            reason, reply = HEADER_REPLIES[author]
            return self._reject(reason, reply, session, sender=sender, user=user.name, problem=author.value)

        queue_id = new_queue_id()
        with message_context(queue_id):
            return await self._publish(queue_id, sender, session, envelope, content)

    async def _publish(self, queue_id: str, sender: str, session: Session, envelope: Envelope, content: bytes) -> str:
        """Publish the AcceptedMessage; `250 ... queued as` only once the broker confirmed it."""
        body = self._accepted_body(queue_id, sender, session, envelope, content)
        try:
            await self._publisher.publish(stages.INBOUND, body, message_id=queue_id)
        except PublishFailed as exc:
            return self._reject(
                Reason.QUEUE_UNAVAILABLE, replies.QUEUE_UNAVAILABLE, session, queue_id, sender=sender, error=str(exc)
            )
        except MessageTooLarge as exc:  # the broker's limit, lower than what this message needs on the bus
            return self._reject(
                Reason.MESSAGE_TOO_BIG, replies.TOO_BIG_FOR_QUEUE, session, queue_id, sender=sender, error=str(exc)
            )
        metrics.MESSAGES_RECEIVED.inc()
        metrics.MESSAGE_SIZE.observe(len(content))
        logger.info(
            "accepted",
            extra={
                "sender": sanitize(sender),
                "recipients": len(envelope.rcpt_tos),
                "size": len(content),
                "client": client_label(session),
                "helo": sanitize(session.host_name or ""),
            },
        )
        return replies.QUEUED.format(queue_id=queue_id)

    def _accepted_body(
        self, queue_id: str, sender: str, session: Session, envelope: Envelope, content: bytes
    ) -> Encoded[message_pb2.AcceptedMessage]:
        """The serialised AcceptedMessage, the trace header and the content joined into it once (with_field)."""
        arrival = datetime.now(UTC)
        client = client_ip(session.peer)
        protocol = protocol_name(
            extended=session.extended_smtp,
            smtputf8=envelope.smtp_utf8,
            tls=session.ssl is not None,
            authenticated=bool(session.authenticated),
        )
        trace = received_header(
            helo=session.host_name,
            client=client,
            hostname=self._hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipients=envelope.rcpt_tos,
            when=arrival,
        )
        user = authenticated_user(session)
        trust = self.trust(session)
        if trust != message_pb2.TRUST_UNTRUSTED:  # RFC 6409 section 8: the MSA completes what apps omit
            content = with_missing_headers(content, when=arrival, message_id=f"{queue_id}@{self._hostname}")
        head = message_pb2.AcceptedMessage(
            queue_id=queue_id,
            sender=sender,
            recipients=envelope.rcpt_tos,
            client_address=str(client) if client is not None else "",
            client_helo=text_field(session.host_name),
            smtputf8=envelope.smtp_utf8,
            trust=trust,
            authenticated_user=user.name if user is not None else "",
        )
        head.arrival_time.FromDatetime(arrival)
        return encoded_with_field(head, message_pb2.AcceptedMessage.CONTENT_FIELD_NUMBER, [trace, content])

    def trust(self, session: Session) -> "message_pb2.Trust.ValueType":
        """The trust decision that travels with the message (only trusted mail is DKIM-signed).

        Authenticated: the session proved who it is, and `author_problem` refused any From: outside
        the user's identities. Relay network: KUBEMTA_RELAY_NETWORKS. Anyone else is untrusted,
        whatever the message claims to be from.
        """
        if session.authenticated:
            return message_pb2.TRUST_AUTHENTICATED
        if self._policy.may_relay(client_ip(session.peer)):
            return message_pb2.TRUST_RELAY_NETWORK
        return message_pb2.TRUST_UNTRUSTED

    def _reject(
        self, reason: Reason, reply: str, session: Session, queue_id: str | None = None, **fields: object
    ) -> str:
        client = client_label(session)
        record_rejection(reason, reply, client=client, helo=session.host_name, queue_id=queue_id, **fields)
        return reply
