"""Who may call the HTTP API: a FastAPI dependency that turns `Authorization: Bearer <token>` into a Principal.

`BearerAuth(verifiers)` is the dependency of every /v1 route. It reads the bearer token
(RFC 6750 §2.1; the scheme name is case-insensitive, RFC 7235 §2.1) and asks each
`TokenVerifier` in turn; the first that knows the token names the caller. Today there is
one verifier, `StaticTokenVerifier` (`KUBEMTA_API_TOKEN` from a Secret, compared in
constant time); API keys and Kubernetes ServiceAccount tokens (TokenReview) are further
verifiers to add to the same list, and a Principal then carries their sender identities.

Answers (RFC 6750 §3): no bearer credentials -> 401 with `WWW-Authenticate: Bearer
realm="kubemta"`; a malformed token or one nobody knows -> 401 with `error="invalid_token"`
added. Verifiers only ever see well-formed tokens (b64token, at most 8 KiB). With no
verifier configured the API is closed, not open: 503 "no API token is configured" (the
ingress keeps taking mail; the API serves nothing until an operator sets a token).
"""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Header, HTTPException
from pydantic import SecretStr

from kubemta_ingress.bearer_token import B64TOKEN
from kubemta_ingress.sender_identity import AuthenticatedUser
from kubemta_ingress.users import Identity

REALM = "kubemta"
CHALLENGE = f'Bearer realm="{REALM}"'
"""RFC 6750 §3: the challenge of a 401 without credentials (no error code, §3.1)."""
INVALID_TOKEN_CHALLENGE = f'{CHALLENGE}, error="invalid_token", error_description="the token is not valid"'
MAX_TOKEN_LENGTH = 8192
"""Longer tokens are refused without being looked at (a ServiceAccount JWT is about 1 KiB)."""


class Unauthorized(HTTPException):
    """401 with the Bearer challenge; `api.py` counts it as `unauthorized`."""

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


class NotConfigured(HTTPException):
    """503: no verifier is configured, so nobody can be authenticated and the API serves nothing."""

    def __init__(self) -> None:
        super().__init__(
            status_code=503, detail="the API is closed: no API token is configured (KUBEMTA_API_TOKEN, from a Secret)"
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    `kind` is how it proved itself: `api-token` (the operator's KUBEMTA_API_TOKEN), `api-key`
    (api_keys.py) or `serviceaccount` (a TokenReview-verified Kubernetes token). `name` is what
    travels on the bus as the submitter (`AcceptedMessage.authenticated_user`): `operator`,
    `apikey:NAME` or `system:serviceaccount:NAMESPACE:NAME`. `identities` are the senders it may
    use; the operator's token has none, so it may not send mail.
    """

    kind: str
    name: str
    identities: tuple[Identity, ...] = ()

    def sender(self) -> AuthenticatedUser:
        """The principal as the acceptance checks see an authenticated sender (SMTP AUTH gives the same)."""
        return AuthenticatedUser(self.name, self.identities)


class TokenVerifier(Protocol):
    """Knows some bearer tokens: the caller they belong to, or None for a token it does not know."""

    async def verify(self, token: str) -> Principal | None:
        """The principal `token` authenticates; None when this verifier does not know it. Never raises for bad input."""
        ...


class StaticTokenVerifier:
    """The one shared operator token (`KUBEMTA_API_TOKEN`).

    Both sides are hashed with SHA-256 before `hmac.compare_digest`, so the comparison takes
    the same time whatever the presented token's length or content.
    """

    PRINCIPAL = Principal(kind="api-token", name="operator")

    def __init__(self, token: SecretStr) -> None:
        self._digest = _digest(token.get_secret_value())

    async def verify(self, token: str) -> Principal | None:
        if hmac.compare_digest(_digest(token), self._digest):
            return self.PRINCIPAL
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", errors="surrogateescape")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """What follows `Bearer ` in an Authorization value (maybe not a valid token); None without bearer credentials."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.lstrip(" ") or None


def well_formed(token: str) -> bool:
    """A b64token (RFC 6750 §2.1) of a sane length."""
    return len(token) <= MAX_TOKEN_LENGTH and B64TOKEN.match(token) is not None


class BearerAuth:
    """The dependency: `Depends(auth)` on a route gives it the Principal, or answers 401/503 before it runs."""

    def __init__(self, verifiers: Sequence[TokenVerifier]) -> None:
        self._verifiers = tuple(verifiers)

    @classmethod
    def from_token(cls, token: SecretStr | None) -> "BearerAuth":
        """One StaticTokenVerifier for `token`; none (a closed API) without one."""
        return cls([StaticTokenVerifier(token)] if token is not None else [])

    @property
    def configured(self) -> bool:
        """True when some token can be accepted."""
        return bool(self._verifiers)

    async def __call__(self, authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not self._verifiers:
            raise NotConfigured()
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("a bearer token is required: Authorization: Bearer <token>", CHALLENGE)
        if well_formed(token):
            for verifier in self._verifiers:
                principal = await verifier.verify(token)
                if principal is not None:
                    return principal
        raise Unauthorized("the bearer token is not valid", INVALID_TOKEN_CHALLENGE)
