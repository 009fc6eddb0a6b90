"""SMTP AUTH (RFC 4954) to the relayhost / smarthost with the configured credentials.

Used only on routes whose source is `relayhost` and only when KUBEMTA_RELAYHOST_USERNAME
is set (the password, KUBEMTA_RELAYHOST_PASSWORD, usually comes from the mounted Secret).
Like Postfix with smtp_sasl_auth_enable and smtp_sasl_security_options = noanonymous,
noplaintext:

- credentials are sent only over TLS (the resolver gives relayhost routes at least the
  `encrypt` level); a plaintext session fails the host with 4.7.4;
- PLAIN is used when offered (RFC 4616), else LOGIN; a server offering neither fails
  the host;
- a refused AUTH (535 5.7.8) defers the mail (Postfix: "SASL authentication failed",
  deferred), so that fixing the Secret delivers the queue instead of bouncing it.

The password is never logged nor put into a diagnostic.
"""

import logging
from dataclasses import dataclass

from aiosmtplib import SMTP, SMTPResponseException
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.replies import enhanced_status, reply_diagnostic
from kubemta_delivery_worker.tls_negotiation import STATUS_TLS_NOT_OFFERED, PolicyFailure

logger = logging.getLogger(__name__)

RELAYHOST_SOURCE = "relayhost"
MECHANISMS: tuple[str, ...] = ("plain", "login")
"""Supported SASL mechanisms, in order of preference."""


@dataclass(frozen=True, slots=True)
class RelayCredentials:
    """The relayhost login; the password stays a SecretStr (its repr is masked)."""

    username: str
    password: SecretStr


def relay_credentials(username: str, password: SecretStr) -> RelayCredentials | None:
    """The credentials, or None when no user name is configured (no AUTH)."""
    return RelayCredentials(username, password) if username else None


def needs_auth(route: message_pb2.Route, credentials: RelayCredentials | None) -> bool:
    """True when a session for `route` must authenticate."""
    return credentials is not None and route.source == RELAYHOST_SOURCE


async def authenticate(
    smtp: SMTP,
    route: message_pb2.Route,
    credentials: RelayCredentials | None,
    *,
    tls: bool,
    label: str,
    queue_id: str,
) -> PolicyFailure | None:
    """AUTH on a greeted (and, after STARTTLS, re-greeted) session; a failure when the host cannot be used."""
    if credentials is None or not needs_auth(route, credentials):
        return None
    if not tls:
        return PolicyFailure(
            f"TLS is required to authenticate to relayhost {label}, but the session is not encrypted",
            STATUS_TLS_NOT_OFFERED,
        )
    offered = [method.lower() for method in smtp.server_auth_methods]
    mechanism = next((name for name in MECHANISMS if name in offered), None)
    if mechanism is None:
        what = ", ".join(offered).upper() if offered else "no AUTH at all"
        return PolicyFailure(
            f"relayhost {label} offers no SASL mechanism kubemta supports (PLAIN, LOGIN): it offers {what}",
            STATUS_TLS_NOT_OFFERED,
        )
    password = credentials.password.get_secret_value()
    try:
        if mechanism == "plain":
            await smtp.auth_plain(credentials.username, password)
        else:
            await smtp.auth_login(credentials.username, password)
    except SMTPResponseException as exc:
        return PolicyFailure(
            f"SASL authentication to relayhost {label} as {credentials.username!r} failed: "
            f"{reply_diagnostic(exc.code, exc.message)} (in reply to AUTH {mechanism.upper()})",
            enhanced_status(message_pb2.OUTCOME_TEMPORARY, exc.message),
            exc.code,
        )
    logger.info(
        "authenticated to relayhost %s as %r (AUTH %s)",
        label,
        credentials.username,
        mechanism.upper(),
        extra={"queue_id": queue_id, "host": label},
    )
    return None
