"""SMTP AUTH (RFC 4954) to the relayhost / smarthost with the configured credentials.

Used only on routes whose source is `relayhost` and only when KUBEMTA_RELAYHOST_USERNAME
is set (the password, KUBEMTA_RELAYHOST_PASSWORD, usually comes from the mounted Secret).
Like Postfix with smtp_sasl_auth_enable and smtp_sasl_security_options = noanonymous,
noplaintext:

- credentials are sent only over TLS whose certificate was verified (Postfix
  smtp_tls_security_level = secure for a SASL relay): a session that will authenticate
  is raised to the `verify` level here, whatever the route's level (the resolver gives
  relayhost routes `encrypt` at least, but only the worker knows it holds credentials),
  so the certificate must chain to a trusted CA (KUBEMTA_TLS_CA_FILE or the system's)
  and be valid for the relayhost's name. A certificate that cannot be verified fails
  the host with 4.7.5 before AUTH; a plaintext session fails it with 4.7.4;
- the one exception is an explicit opt-out BY NAME: KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME
  equal to the host name the worker connects to; that host alone is authenticated to
  over an unverified (`encrypt`) session, so a changed relayhost never inherits it;
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
from kubemta_delivery_worker.tls_negotiation import STATUS_TLS_FAILED, STATUS_TLS_NOT_OFFERED, PolicyFailure

logger = logging.getLogger(__name__)

RELAYHOST_SOURCE = "relayhost"
MECHANISMS: tuple[str, ...] = ("plain", "login")
"""Supported SASL mechanisms, in order of preference."""
OPT_OUT_SETTING = "KUBEMTA_RELAYHOST_TLS_UNVERIFIED_NAME"
SOURCE_AUTH_VERIFY = f"relayhost AUTH: credentials go only over a verified certificate ({OPT_OUT_SETTING} opts out)"
SOURCE_AUTH_UNVERIFIED = f"relayhost AUTH over an unverified certificate for this host ({OPT_OUT_SETTING})"

# Postfix's order of smtp_tls_security_level: none < may < encrypt < verify.
_RANK = {
    message_pb2.TLS_POLICY_NONE: 0,
    message_pb2.TLS_POLICY_UNSPECIFIED: 1,
    message_pb2.TLS_POLICY_MAY: 1,
    message_pb2.TLS_POLICY_ENCRYPT: 2,
    message_pb2.TLS_POLICY_VERIFY: 3,
}


@dataclass(frozen=True, slots=True)
class RelayCredentials:
    """The relayhost login; the password stays a SecretStr (its repr is masked).

    `unverified_name` is the one relayhost host name (lower case, no trailing dot) the
    operator allowed to authenticate to without a verified certificate; "" for none.
    """

    username: str
    password: SecretStr
    unverified_name: str = ""


def relay_credentials(username: str, password: SecretStr, unverified_name: str = "") -> RelayCredentials | None:
    """The credentials, or None when no user name is configured (no AUTH)."""
    name = unverified_name.strip().rstrip(".").lower()
    return RelayCredentials(username, password, name) if username else None


def needs_auth(route: message_pb2.Route, credentials: RelayCredentials | None) -> bool:
    """True when a session for `route` must authenticate."""
    return credentials is not None and route.source == RELAYHOST_SOURCE


def host_name(host: message_pb2.RouteHost) -> str:
    """The name a relayhost's certificate is checked against (and the opt-out compared with)."""
    return (host.hostname.strip().rstrip(".") or host.address).lower()


def opted_out(host: message_pb2.RouteHost, credentials: RelayCredentials | None) -> bool:
    """True when the operator named exactly this host as one to authenticate to without verification."""
    name = credentials.unverified_name if credentials is not None else ""
    return bool(name) and name == host_name(host)


def session_route(
    route: message_pb2.Route, host: message_pb2.RouteHost, credentials: RelayCredentials | None
) -> message_pb2.Route:
    """The route as a session with `host` must treat it: `route` itself, or, for a session that will
    authenticate, a copy raised to `verify` (`encrypt` for the opted-out host name).

    A route at `none` stays so: the password never goes out in plaintext (`authenticate` refuses).
    """
    if not needs_auth(route, credentials) or route.tls_policy == message_pb2.TLS_POLICY_NONE:
        return route
    unverified = opted_out(host, credentials)
    floor = message_pb2.TLS_POLICY_ENCRYPT if unverified else message_pb2.TLS_POLICY_VERIFY
    if _RANK.get(route.tls_policy, 1) >= _RANK[floor]:
        return route
    return message_pb2.Route(
        kind=route.kind,
        source=route.source,
        provider=route.provider,
        tls_policy=floor,
        tls_policy_source=SOURCE_AUTH_UNVERIFIED if unverified else SOURCE_AUTH_VERIFY,
        mta_sts_mx=route.mta_sts_mx,
    )


async def authenticate(
    smtp: SMTP,
    route: message_pb2.Route,
    host: message_pb2.RouteHost,
    credentials: RelayCredentials | None,
    *,
    tls: bool,
    verified: bool,
    label: str,
) -> PolicyFailure | None:
    """AUTH on a greeted (and, after STARTTLS, re-greeted) session; a failure when the host cannot be used.

    The last gate before the password leaves the process: TLS, and a verified certificate
    (`verified`) unless `host` is the opted-out name.
    """
    if credentials is None or not needs_auth(route, credentials):
        return None
    if not tls:
        return PolicyFailure(
            f"TLS is required to authenticate to relayhost {label}, but the session is not encrypted",
            STATUS_TLS_NOT_OFFERED,
        )
    if not verified and not opted_out(host, credentials):
        return PolicyFailure(
            f"the certificate of relayhost {label} was not verified, and credentials go only over a verified "
            f"certificate ({OPT_OUT_SETTING} names the one host allowed without)",
            STATUS_TLS_FAILED,
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
    logger.log(
        logging.INFO if verified else logging.WARNING,
        "authenticated to relayhost %s as %r (AUTH %s, %s)",
        label,
        credentials.username,
        mechanism.upper(),
        "certificate verified" if verified else f"certificate NOT verified: {OPT_OUT_SETTING} names this host",
        extra={"host": label, "certificate_verified": verified},
    )
    return None
