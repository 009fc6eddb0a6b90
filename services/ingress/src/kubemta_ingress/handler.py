"""The SMTP transaction decisions: aiosmtpd's hooks, answered by the checks every accepted message passes.

aiosmtpd calls these hooks (docs/handlers.rst); per-connection state lives on its
`Session`, per-transaction state on its `Envelope`. The decisions themselves are
`MailAcceptance`'s (acceptance.py), which the HTTP API's `POST /v1/messages` shares: the
sender at MAIL, each recipient at RCPT, the message at DATA. A message is answered
`250 2.0.0 Ok: queued as <id>` only after the broker confirmed the publish; if it did
not, the client gets `451 4.3.0` and retries (ARCHITECTURE.md, "No confirm, no 250").

Relay is granted by authentication or by the relay networks (policy.py). An
authenticated user may only use its own sender identities, in the envelope at MAIL
and in the author headers at DATA (sender_identity.py). AUTH PLAIN and LOGIN come
from `AuthMechanisms` (auth.py). A client's retry of a message already queued (same
Message-ID, envelope and body within KUBEMTA_DUPLICATE_WINDOW, asked of the tracker) gets
`250` with the first queue id and is not queued again.

The DSN parameters (RFC 3461; esmtp_dsn.py) are read before anything else MAIL and RCPT
check, as Postfix does, and refused with `501 5.5.4 Bad <NAME> parameter syntax` (a syntax
error, not counted as a rejection, as aiosmtpd's own `501`s are not). They are kept on the
`DsnEnvelope`: RET and ENVID of MAIL, NOTIFY and ORCPT by recipient as `rcpt_tos` holds it
(a bare <Postmaster> as postmaster@KUBEMTA_HOSTNAME); a recipient given twice keeps what it
was first given, as it keeps its first place.
"""

import logging
import time

from aiosmtpd.smtp import SMTP, Envelope, Session

from kubemta.v1 import message_pb2
from kubemta_common.dsn_parameters import DsnParameterError
from kubemta_ingress import metrics, replies
from kubemta_ingress.acceptance import MAX_HOPS_DEFAULT, MailAcceptance, Queued, Refusal, text_field
from kubemta_ingress.auth import AuthMechanisms
from kubemta_ingress.esmtp_dsn import DsnEnvelope, MailDsn, mail_parameters, recipient_parameters
from kubemta_ingress.listeners import session_listener
from kubemta_ingress.policy import client_ip, ip_text
from kubemta_ingress.received import protocol_name
from kubemta_ingress.rejections import Reason, record_rejection
from kubemta_ingress.sender_identity import AuthenticatedUser
from kubemta_ingress.submission import Submission

__all__ = ["MAX_HOPS_DEFAULT", "IngressHandler", "text_field"]

POSTMASTER = "postmaster"  # RFC 5321 section 4.5.1; bare, it means this system's: postmaster@KUBEMTA_HOSTNAME
NULL_SENDER = "<>"  # how aiosmtpd passes MAIL FROM:<> (RFC 5321 section 4.5.5)
logger = logging.getLogger(__name__)


def client_label(session: Session) -> str:
    """The client's IP address for logs, or `unknown`."""
    address = client_ip(session.peer)
    return ip_text(address) if address is not None else "unknown"


def authenticated_user(session: Session) -> AuthenticatedUser | None:
    """The user an authenticated session belongs to; a session authenticated otherwise owns nothing."""
    if not session.authenticated:
        return None
    user = session.auth_data
    return user if isinstance(user, AuthenticatedUser) else AuthenticatedUser("unknown", ())


class IngressHandler(AuthMechanisms):
    """aiosmtpd handler: AUTH, then `MailAcceptance`'s checks at MAIL, RCPT and DATA, and the queueing."""

    def __init__(self, acceptance: MailAcceptance) -> None:
        self.acceptance = acceptance
        self._hostname = acceptance.hostname
        self._policy = acceptance.policy
        self._max_message_size = acceptance.max_message_size

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return replies.ehlo_response(responses, self._max_message_size)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        try:
            dsn = mail_parameters(mail_options)
        except DsnParameterError as error:
            return error.reply
        sender = "" if address == NULL_SENDER else address
        refusal = self.acceptance.sender_refusal(sender, authenticated_user(session), smtputf8=envelope.smtp_utf8)
        if refusal is not None:
            return self._reject(refusal, session)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        if isinstance(envelope, DsnEnvelope):
            envelope.dsn = dsn
        return replies.SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            dsn = recipient_parameters(rcpt_options, smtputf8=envelope.smtp_utf8)
        except DsnParameterError as error:
            return error.reply
        postmaster = address.lower() == POSTMASTER
        if postmaster:  # RFC 5321 section 4.5.1: <Postmaster> without a domain MUST be accepted
            address = f"{POSTMASTER}@{self._hostname}"
        if address in envelope.rcpt_tos:
            return replies.RECIPIENT_OK  # a duplicate is accepted once (as Postfix' cleanup does)
        refusal = await self.acceptance.recipient_refusal(
            address,
            envelope.rcpt_tos,
            sender=text_field(envelope.mail_from),
            client=client_ip(session.peer),
            authenticated=bool(session.authenticated),
            smtputf8=envelope.smtp_utf8,
            postmaster=postmaster,
        )
        if refusal is not None:
            return self._reject(refusal, session)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if dsn is not None and isinstance(envelope, DsnEnvelope):
            envelope.recipient_dsn[address] = dsn
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        try:
            outcome = await self.acceptance.queue(self._submission(session, envelope))
        except Exception:
            logger.exception("failed to queue a message", extra={"client": client_label(session)})
            return self._reject(Refusal(Reason.INTERNAL_ERROR, replies.INTERNAL_ERROR), session)
        finally:
            metrics.ACCEPT_DURATION.observe(time.monotonic() - started)
        if isinstance(outcome, Queued):
            return replies.QUEUED.format(queue_id=outcome.queue_id)
        return self._reject(outcome, session)

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP command failed: %r", error, exc_info=error)
        return replies.INTERNAL_ERROR

    def _submission(self, session: Session, envelope: Envelope) -> Submission:
        """The SMTP transaction as `MailAcceptance` takes it."""
        content = envelope.original_content
        assert content is not None, "aiosmtpd calls handle_DATA with the content read"
        listener = session_listener(session)
        dsn = envelope.dsn if isinstance(envelope, DsnEnvelope) else MailDsn()
        return Submission(
            sender="" if envelope.mail_from == NULL_SENDER else text_field(envelope.mail_from),
            recipients=envelope.rcpt_tos,
            content=content,
            client=client_ip(session.peer),
            helo=session.host_name,
            user=authenticated_user(session),
            trust=self.trust(session),
            listener=listener.value if listener is not None else "",
            protocol=protocol_name(
                extended=session.extended_smtp,
                smtputf8=envelope.smtp_utf8,
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            ),
            smtputf8=envelope.smtp_utf8,
            recipient_dsn=envelope.recipient_dsn if isinstance(envelope, DsnEnvelope) else {},
            envid=dsn.envid,
            ret=dsn.ret,
        )

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

    def _reject(self, refusal: Refusal, session: Session) -> str:
        """Record the refusal with this session's client and answer its reply."""
        fields = {key: text_field(value) if isinstance(value, str) else value for key, value in refusal.fields.items()}
        record_rejection(
            refusal.reason,
            refusal.reply,
            client=client_label(session),
            helo=session.host_name,
            queue_id=refusal.queue_id,
            **fields,
        )
        return refusal.reply
