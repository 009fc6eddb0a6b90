"""The three SMTP listeners and what each one demands of a session.

- `smtp` (KUBEMTA_SMTP_LISTEN, 2525, Service port 25; MX and relay): STARTTLS offered
  when a certificate is configured; AUTH offered only after STARTTLS, never required.
- `submission` (KUBEMTA_SUBMISSION_LISTEN, 2587 -> 587): STARTTLS required before
  anything but EHLO/NOOP/QUIT (RFC 3207 section 4, `530 5.7.0 Must issue a STARTTLS
  command first`); AUTH required before MAIL (RFC 4954 section 6, `530 5.7.0
  Authentication required`).
- `smtps` (KUBEMTA_SMTPS_LISTEN, 2465 -> 465): implicit TLS from the first byte
  (RFC 8314 section 3.3); AUTH required before MAIL.

AUTH is never offered in clear text on any listener (RFC 4954 section 4 leaves it to
policy; Postfix' `smtpd_tls_auth_only = yes`). A session is an `IngressSession`, which
records the listener it came in on and the socket peer it really came from (the
client address in `peer` may come from a PROXY protocol header, see proxy.py).
"""

import asyncio
import enum
from dataclasses import dataclass

from aiosmtpd.smtp import Session

from kubemta_ingress.rejections import Reason


class ListenerKind(enum.StrEnum):
    """The listener a session came in on (also the `listener` metric label)."""

    SMTP = "smtp"
    SUBMISSION = "submission"
    SMTPS = "smtps"


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    """What a listener demands: TLS from the first byte, STARTTLS before anything else, AUTH before MAIL."""

    kind: ListenerKind
    implicit_tls: bool
    require_starttls: bool
    auth_required: bool

    @classmethod
    def for_kind(cls, kind: ListenerKind) -> "ListenerPolicy":
        """The fixed policy of each listener (see the module docstring)."""
        return _POLICIES[kind]


_POLICIES = {
    ListenerKind.SMTP: ListenerPolicy(
        ListenerKind.SMTP, implicit_tls=False, require_starttls=False, auth_required=False
    ),
    ListenerKind.SUBMISSION: ListenerPolicy(
        ListenerKind.SUBMISSION, implicit_tls=False, require_starttls=True, auth_required=True
    ),
    ListenerKind.SMTPS: ListenerPolicy(
        ListenerKind.SMTPS, implicit_tls=True, require_starttls=False, auth_required=True
    ),
}

MX = ListenerPolicy.for_kind(ListenerKind.SMTP)

# aiosmtpd's replies when a listener's policy refuses a command, and the rejection reason they count under
# (aiosmtpd/smtp.py `_handle_client` for require_starttls, `check_auth_needed` for auth_required).
POLICY_REFUSALS: dict[str, Reason] = {
    "530 Must issue a STARTTLS command first": Reason.STARTTLS_REQUIRED,
    "530 5.7.0 Authentication required": Reason.AUTH_REQUIRED,
}


class IngressSession(Session):
    """aiosmtpd's per-connection state, plus the listener and the socket's own peer address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: ListenerKind) -> None:
        super().__init__(loop)
        self.listener = listener
        self.socket_peer: object = None  # the TCP peer (a load balancer when a PROXY header named the client)


def session_listener(session: Session | None) -> ListenerKind | None:
    """The listener a session came in on (None for a session not created by the ingress server)."""
    return session.listener if isinstance(session, IngressSession) else None
