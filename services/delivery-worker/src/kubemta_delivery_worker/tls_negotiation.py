"""The STARTTLS step of an SMTP session, as the route's TLS policy asks (Route.tls_policy, mta_sts_mx).

Levels as in Postfix's smtp_tls_security_level (the resolver decides the level):

- NONE: never STARTTLS.
- MAY / UNSPECIFIED: STARTTLS when offered, certificate not checked; a refused STARTTLS
  continues in plaintext, a failed handshake is redone in plaintext (RFC 7435).
- ENCRYPT: STARTTLS required, certificate not checked. Not offered, refused or a failed
  handshake -> the host fails temporarily ("TLS is required, but ...") and the next
  host is tried, like Postfix (4.7.4 not offered, 4.7.5 handshake/certificate).
- VERIFY: as ENCRYPT, and the certificate must chain to a trusted CA and be valid for
  the host's name (the MX name, RFC 6125; CA bundle KUBEMTA_TLS_CA_FILE or the system's).
- MTA-STS enforce (mta_sts_mx set, with VERIFY): the host name must also match one of
  the policy's mx patterns (RFC 8461 §4.1); the resolver already removed the others,
  this is the worker's own check before it trusts a certificate for that name.
"""

import functools
import logging
import ssl
from dataclasses import dataclass

from aiosmtplib import SMTP, SMTPException, SMTPResponseException

from kubemta.v1 import message_pb2
from kubemta_common.mta_sts_patterns import mx_matches
from kubemta_delivery_worker.metrics import TLS_OUTBOUND
from kubemta_delivery_worker.replies import reply_diagnostic
from kubemta_delivery_worker.tls import opportunistic_tls_context, verifying_tls_context

logger = logging.getLogger(__name__)

# RFC 3463 §3.8 / RFC 5248: X.7.4 security features not supported, X.7.5 cryptographic failure
# (Postfix: "4.7.4 TLS is required, but was not offered by host", "4.7.5 ... certificate not verified").
STATUS_TLS_NOT_OFFERED = "4.7.4"
STATUS_TLS_FAILED = "4.7.5"

_REQUIRED = (message_pb2.TLS_POLICY_ENCRYPT, message_pb2.TLS_POLICY_VERIFY)


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    """A host that cannot be used under the route's policy: a temporary failure, try the next host."""

    diagnostic: str
    status: str
    smtp_code: int = 0


@dataclass(frozen=True, slots=True)
class TlsOutcome:
    """How STARTTLS went: `tls` on success (`verified` when the certificate was checked); `failure` when TLS
    was required and could not be had; `fallback` (a reason) when an opportunistic handshake failed and the
    session must be redone in plaintext."""

    tls: bool = False
    verified: bool = False
    failure: PolicyFailure | None = None
    fallback: str | None = None
    handshake_failed: bool = False


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The two client contexts: opportunistic (no checks) and verifying."""

    opportunistic: ssl.SSLContext
    verifying: ssl.SSLContext


@functools.cache
def _system_verifying_context() -> ssl.SSLContext:
    return verifying_tls_context()


def contexts(opportunistic: ssl.SSLContext | None = None, verifying: ssl.SSLContext | None = None) -> TlsContexts:
    """Contexts with defaults: a fresh opportunistic one, and one verifying against the system's CAs."""
    return TlsContexts(opportunistic or opportunistic_tls_context(), verifying or _system_verifying_context())


def policy_name(route: message_pb2.Route) -> str:
    """The level's word for logs and diagnostics: none, may, encrypt or verify."""
    return {
        message_pb2.TLS_POLICY_NONE: "none",
        message_pb2.TLS_POLICY_ENCRYPT: "encrypt",
        message_pb2.TLS_POLICY_VERIFY: "verify",
    }.get(route.tls_policy, "may")


def _because(route: message_pb2.Route) -> str:
    source = f", {route.tls_policy_source}" if route.tls_policy_source else ""
    return f" (TLS policy {policy_name(route)}{source})"


def _certificate_problem(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message  # always set by the ssl module (X509_verify_cert_error_string)
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, ssl.SSLError):
        return f"TLS error: {cause.reason or cause}"
    if isinstance(exc, SMTPException):
        return exc.message
    return str(exc) or type(exc).__name__


async def negotiate(
    smtp: SMTP,
    route: message_pb2.Route,
    host: message_pb2.RouteHost,
    tls: TlsContexts,
    *,
    allowed: bool,
    label: str,
) -> TlsOutcome:
    """STARTTLS on a greeted session as `route` demands; `allowed` False is the plaintext redo after a
    failed opportunistic handshake. Never raises for TLS problems."""
    required = route.tls_policy in _REQUIRED
    verify = route.tls_policy == message_pb2.TLS_POLICY_VERIFY
    name = host.hostname.strip().rstrip(".")
    if route.tls_policy == message_pb2.TLS_POLICY_NONE or not allowed:
        TLS_OUTBOUND.labels(result="plaintext").inc()
        return TlsOutcome()
    if route.mta_sts_mx and not mx_matches(name, list(route.mta_sts_mx)):
        TLS_OUTBOUND.labels(result="mx_mismatch").inc()
        patterns = ", ".join(route.mta_sts_mx)
        return _required_failure(f"host {label} matches none of the MTA-STS mx patterns ({patterns})", route)
    if not smtp.supports_extension("starttls"):
        if required:
            TLS_OUTBOUND.labels(result="not_offered").inc()
            return _required_failure(f"was not offered by host {label}", route, STATUS_TLS_NOT_OFFERED)
        TLS_OUTBOUND.labels(result="plaintext").inc()
        return TlsOutcome()
    try:
        await smtp.starttls(
            server_hostname=(name or host.address) if verify else (name or None),
            tls_context=tls.verifying if verify else tls.opportunistic,
        )
    except SMTPResponseException as exc:
        reply = reply_diagnostic(exc.code, exc.message)
        if required:
            TLS_OUTBOUND.labels(result="not_offered").inc()
            return _required_failure(f"host {label} refused STARTTLS: {reply}", route, STATUS_TLS_NOT_OFFERED)
        TLS_OUTBOUND.labels(result="plaintext").inc()
        logger.info(
            "%s refused STARTTLS (%s); continuing in plaintext",
            label,
            reply,
            extra={"host": label},
        )
        return TlsOutcome()
    except (SMTPException, ssl.SSLError, OSError) as exc:
        problem = _certificate_problem(exc)
        if problem is not None:
            TLS_OUTBOUND.labels(result="verify_failed").inc()
            outcome = _required_failure(f"the certificate of host {label} could not be verified: {problem}", route)
            return TlsOutcome(failure=outcome.failure, handshake_failed=True)
        TLS_OUTBOUND.labels(result="handshake_failed").inc()
        if required:
            outcome = _required_failure(f"the TLS handshake with host {label} failed: {_describe(exc)}", route)
            return TlsOutcome(failure=outcome.failure, handshake_failed=True)
        return TlsOutcome(fallback=_describe(exc), handshake_failed=True)
    TLS_OUTBOUND.labels(result="verified" if verify else "encrypted").inc()
    return TlsOutcome(tls=True, verified=verify)


def _required_failure(what: str, route: message_pb2.Route, status: str = STATUS_TLS_FAILED) -> TlsOutcome:
    return TlsOutcome(failure=PolicyFailure(f"TLS is required, but {what}{_because(route)}", status))
