"""RSA for DKIM signing done by OpenSSL (through `cryptography`) instead of dkimpy's Python arithmetic.

dkimpy builds the DKIM-Signature header well, but computes the RSA signature with
Python's `pow` on big integers: 8.5 ms per rsa-sha256 signature of a 2048-bit key on
the benchmark machine, nine times the queue-manager's whole cost of a message. The
same signature from OpenSSL takes well under a millisecond. RSASSA-PKCS1-v1_5
(RFC 8017 §8.2) is deterministic, so both produce the same bytes; a test compares them.

`install()` replaces the two names dkimpy's signing code calls, in the `dkim` module:
`parse_pem_private_key` (the key parsed once per key file, not once per message) and
`RSASSA_PKCS1_v1_5_sign`. Verification, Ed25519 and everything else stay dkimpy's.
"""

import functools
from typing import Protocol

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
"""The digests of rsa-sha256 and rsa-sha1 (RFC 6376 §3.3), by hashlib name."""


class Digest(Protocol):
    """What dkimpy hands the signing function: a finished hash (its HashThrough)."""

    name: str

    def digest(self) -> bytes: ...


@functools.lru_cache(maxsize=256)
def parse_pem_private_key(data: bytes) -> rsa.RSAPrivateKey:
    """The RSA key of a PEM file's content (PKCS#1 or PKCS#8), parsed once per distinct key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise dkim.UnparsableKeyError(str(exc)) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise dkim.UnparsableKeyError("not an RSA private key")
    return key


def rsassa_pkcs1_v1_5_sign(digest: Digest, key: rsa.RSAPrivateKey) -> bytes:
    """The RSASSA-PKCS1-v1_5 signature of a finished digest (RFC 8017 §8.2.1)."""
    algorithm = HASHES[digest.name.lower()]()
    return key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


def install() -> None:
    """Make dkimpy's signing use OpenSSL for RSA (idempotent)."""
    dkim.parse_pem_private_key = parse_pem_private_key
    dkim.RSASSA_PKCS1_v1_5_sign = rsassa_pkcs1_v1_5_sign
