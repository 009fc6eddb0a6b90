"""What can be read from a JWT without verifying it: its shape and its expiry, for a cheap look before a TokenReview.

A Kubernetes ServiceAccount token is a JWS in compact serialisation (RFC 7515 §7.1):
`header.payload.signature`, each part base64url without padding (RFC 7515 §2), the payload
a JSON object of claims (RFC 7519 §4.1): `exp` (seconds since the epoch), `aud`, `sub`.
Nothing here is trusted: the TokenReview API says whether a token is genuine
(tokenreview.py). `jwt_shaped` only keeps garbage from reaching the API, and
`unverified_expiry` only shortens how long a verified token's answer is cached
(serviceaccounts.py), so a token that lies about its `exp` gains nothing.
"""

import base64
import binascii
import json
import math
import re

MAX_JWT_LENGTH = 8192
"""Longer tokens are not looked at (a projected ServiceAccount token is about 1 KiB; api_auth.MAX_TOKEN_LENGTH)."""
_JWT = re.compile(r"[A-Za-z0-9_-]{2,4096}\.[A-Za-z0-9_-]{2,8192}\.[A-Za-z0-9_-]{2,4096}\Z")
"""RFC 7515 §7.1: three base64url parts (RFC 4648 §5, no padding), none empty (a signed token)."""


def jwt_shaped(token: str) -> bool:
    """True when `token` looks like a signed JWT of a sane length (nothing is verified)."""
    return len(token) <= MAX_JWT_LENGTH and _JWT.match(token) is not None


def unverified_expiry(token: str) -> float | None:
    """The `exp` claim (seconds since the epoch) of a JWT-shaped token; None when it has none or cannot be read."""
    if not jwt_shaped(token):
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    expiry = claims.get("exp")
    if isinstance(expiry, bool) or not isinstance(expiry, int | float) or not math.isfinite(expiry):
        return None
    return float(expiry)
