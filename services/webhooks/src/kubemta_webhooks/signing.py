"""Standard Webhooks signatures (https://www.standardwebhooks.com, spec.md "Signature scheme").

A webhook carries three headers: `webhook-id` (the same on every retry), `webhook-timestamp`
(integer seconds since the epoch, fresh on every attempt) and `webhook-signature`: a space-separated
list of `v1,<base64 HMAC-SHA256>` over `"<id>.<timestamp>.<body>"`, keyed with the endpoint's secret.
A secret written `whsec_<base64>` is the base64-decoded bytes (as the reference libraries take it);
any other secret is its UTF-8 bytes. `sign` is what the sender uses; `verify` is what a receiver
(and the tests' receiver) uses: constant-time comparison and a timestamp tolerance against replays.
"""

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
"""Standard Webhooks: secrets are 24 to 64 random bytes; shorter keys are guessable."""
MAX_SECRET_BYTES = 1024
TOLERANCE_SECONDS = 300
"""How far a receiver accepts `webhook-timestamp` from its own clock (the spec's suggestion: 5 minutes)."""
MAX_SIGNATURE_HEADER = 4096
"""A longer `webhook-signature` header is refused unread (hostile input on the receiver side)."""


class VerificationError(ValueError):
    """A webhook that does not verify: missing headers, a stale timestamp or no matching signature."""


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a secret: `whsec_<base64>` decoded, else the UTF-8 bytes; ValueError when invalid."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    else:
        key = secret.encode("utf-8", "surrogatepass")
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"a secret has {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes (got {len(key)})")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key: bytes, webhook_id: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt sent now."""
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> str:
    """Check a received webhook; returns its `webhook-id`, raises VerificationError otherwise.

    `headers` must be looked up case-insensitively when they come from HTTP (lower-case keys, or a
    case-insensitive mapping such as Starlette's or httpx's `Headers`)."""
    key = secret if isinstance(secret, bytes) else secret_bytes(secret)
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not webhook_id or not stamp or not signatures:
        raise VerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    if len(signatures) > MAX_SIGNATURE_HEADER or len(webhook_id) > MAX_SIGNATURE_HEADER:
        raise VerificationError("oversized webhook headers")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise VerificationError("webhook-timestamp is not integer seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise VerificationError("webhook-timestamp is outside the tolerance")
    expected = signature(key, webhook_id, timestamp, body).encode("ascii")
    for candidate in signatures.split(" "):
        if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
            return webhook_id
    raise VerificationError("no matching signature")
