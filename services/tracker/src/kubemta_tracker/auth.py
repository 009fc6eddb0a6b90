"""Who may call the tracker API: `Authorization: Bearer <token>` against the read and admin token tables.

`require_read` and `require_admin` are FastAPI dependencies returning the caller's name (the
token's name from `KUBEMTA_TRACKER_READ_TOKENS` / `KUBEMTA_TRACKER_ADMIN_TOKENS`; an admin token
may also read). The tables live on `app.state.auth` (a `TokenAuth`, set by `api.create_app`).

Answers (RFC 6750 §3): no or malformed credentials, or a token nobody knows -> 401 with
`WWW-Authenticate: Bearer realm="kubemta-tracker"`; a read token on an admin route -> 403.
Every configured token is compared, in constant time (`hmac.compare_digest` over SHA-256
digests, so neither the length nor the content of a presented token shortens the work), and
the loop never stops early. With no tokens configured every request gets 401: closed, not open.
"""

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum

from fastapi import HTTPException, Request
from pydantic import SecretStr

from kubemta_tracker.settings import B64TOKEN, MAX_TOKEN_LENGTH

REALM = "kubemta-tracker"
CHALLENGE = f'Bearer realm="{REALM}"'
INVALID_TOKEN_CHALLENGE = f'{CHALLENGE}, error="invalid_token"'
INSUFFICIENT_SCOPE_CHALLENGE = f'{CHALLENGE}, error="insufficient_scope"'


class Scope(IntEnum):
    """What a token may do; a higher scope includes the lower."""

    READ = 1
    ADMIN = 2


@dataclass(frozen=True, slots=True)
class _Known:
    name: str
    digest: bytes
    scope: Scope


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenAuth:
    """The configured tokens: who a presented token belongs to, and with which scope."""

    def __init__(self, read_tokens: dict[str, SecretStr], admin_tokens: dict[str, SecretStr]) -> None:
        self._known = [
            *(_Known(name, _digest(token.get_secret_value()), Scope.ADMIN) for name, token in admin_tokens.items()),
            *(_Known(name, _digest(token.get_secret_value()), Scope.READ) for name, token in read_tokens.items()),
        ]

    @property
    def configured(self) -> bool:
        """True when at least one token is configured."""
        return bool(self._known)

    def identify(self, token: str) -> tuple[str, Scope] | None:
        """The name and scope of `token` (the admin entry wins when both tables hold it); None if unknown."""
        digest = _digest(token)
        found: tuple[str, Scope] | None = None
        for known in self._known:  # all of them, every time
            if hmac.compare_digest(digest, known.digest) and (found is None or known.scope > found[1]):
                found = (known.name, known.scope)
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive, RFC 7235 §2.1); None when
    the value is missing or not a well-formed bearer credential."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip(" \t").partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH or not B64TOKEN.match(token):
        return None
    return token


def authenticate(request: Request, needed: Scope) -> str:
    """The caller's name, or HTTPException 401 (no/unknown token) / 403 (token lacks `needed`)."""
    auth: TokenAuth = request.app.state.auth
    raw = request.headers.get("authorization")
    token = bearer_token(raw)
    if token is None:
        challenge = CHALLENGE if not raw else INVALID_TOKEN_CHALLENGE
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": challenge})
    found = auth.identify(token)
    if found is None:
        raise HTTPException(401, "the token is not valid", headers={"WWW-Authenticate": INVALID_TOKEN_CHALLENGE})
    name, scope = found
    if scope < needed:
        raise HTTPException(403, "this token may only read", headers={"WWW-Authenticate": INSUFFICIENT_SCOPE_CHALLENGE})
    return name


def require_read(request: Request) -> str:
    """Dependency of the read routes: the caller's name (a read or an admin token)."""
    return authenticate(request, Scope.READ)


def require_admin(request: Request) -> str:
    """Dependency of the admin routes: the caller's name (the actor of the action; an admin token only)."""
    return authenticate(request, Scope.ADMIN)
