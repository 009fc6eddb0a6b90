"""DKIM public keys and their DNS TXT records (RFC 6376 §3.6.1; Ed25519 per RFC 8463 §4.2).

`public_key(key)` derives the `p=` value from a private key file's content (RSA: the
base64 DER SubjectPublicKeyInfo; Ed25519: the base64 32-octet public key), so the
record to publish and the record found in DNS can be compared without a second source
of truth. `parse_record` reads a published record's tags, and `same_key` compares two p=
values. An RSA p= may hold a SubjectPublicKeyInfo or a bare PKCS#1 RSAPublicKey (RFC 6376
§3.6.1 and its erratum 3017; verifiers accept both), so RSA keys are compared by their numbers.
"""

import base64
import binascii
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.keys import Algorithm, KeyFileError, parse_key

TXT_STRING_LIMIT = 255
"""RFC 1035 §3.3.14: a TXT character-string holds at most 255 octets."""
KEY_TYPES = {Algorithm.RSA_SHA256: "rsa", Algorithm.ED25519_SHA256: "ed25519"}
"""The k= tag value of each signing algorithm (RFC 6376 §3.6.1, RFC 8463 §4.2)."""


def public_key(private_key: bytes) -> tuple[Algorithm, str]:
    """The algorithm of a key file's content and the base64 public key for p=; KeyFileError when unusable."""
    algorithm, key = parse_key(private_key)
    if algorithm is Algorithm.ED25519_SHA256:
        seed = base64.b64decode(key)
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return algorithm, base64.b64encode(raw).decode("ascii")
    try:
        loaded = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"not a PEM RSA private key: {exc}") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise KeyFileError("a PEM key that is not RSA")
    der = loaded.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return algorithm, base64.b64encode(der).decode("ascii")


def record_value(algorithm: Algorithm, public: str) -> str:
    """The TXT record value: `v=DKIM1; k=<type>; p=<key>`."""
    return f"v=DKIM1; k={KEY_TYPES[algorithm]}; p={public}"


def record_name(domain: str, selector: str) -> str:
    """The owner name of a selector's record, without the final dot."""
    return f"{selector}._domainkey.{domain}"


def txt_strings(value: str, limit: int = TXT_STRING_LIMIT) -> list[str]:
    """`value` cut into character-strings of at most `limit` octets (the record value is ASCII)."""
    return [value[start : start + limit] for start in range(0, len(value), limit)] or [""]


def zone_line(domain: str, selector: str, value: str) -> str:
    """The zone-file line to publish: `<selector>._domainkey.<domain>. IN TXT ( "..." "..." )`."""
    strings = " ".join(f'"{part}"' for part in txt_strings(value))
    return f"{record_name(domain, selector)}. IN TXT ( {strings} )"


@dataclass(frozen=True)
class PublishedKey:
    """The tags of a published DKIM key record that matter for verification."""

    version: str | None
    key_type: str
    public: str
    """The p= value with white space removed; empty means the key was revoked (RFC 6376 §3.6.1)."""


class RecordError(ValueError):
    """A TXT record that is not a valid DKIM key record."""


def parse_record(value: str) -> PublishedKey:
    """The tags of a DKIM key record's value (its strings already joined); RecordError when invalid."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        if not part.strip():
            continue
        name, equals, tag_value = part.partition("=")
        name = name.strip()
        if not equals or not name:
            raise RecordError(f"malformed tag {part.strip()!r}")
        if name in tags:
            raise RecordError(f"duplicate tag {name}=")
        tags[name] = "".join(tag_value.split())
    version = tags.get("v")
    if version is not None and version != "DKIM1":
        raise RecordError(f"v={version}, expected v=DKIM1")
    if "p" not in tags:
        raise RecordError("no p= tag")
    key_type = tags.get("k", "rsa").lower()
    if tags["p"]:
        try:
            base64.b64decode(tags["p"], validate=True)
        except (binascii.Error, ValueError):
            raise RecordError("p= is not base64") from None
    return PublishedKey(version, key_type, tags["p"])


def same_key(published: str, public: str, key_type: str) -> bool:
    """True when the base64 p= values hold the same key (RSA: SubjectPublicKeyInfo or PKCS#1, compared by numbers)."""
    if published == public:
        return True
    if key_type != "rsa":
        return False
    try:
        theirs = serialization.load_der_public_key(base64.b64decode(published))
        ours = serialization.load_der_public_key(base64.b64decode(public))
    except (ValueError, binascii.Error, UnsupportedAlgorithm):
        return False
    if not isinstance(theirs, rsa.RSAPublicKey) or not isinstance(ours, rsa.RSAPublicKey):
        return False
    return theirs.public_numbers() == ours.public_numbers()
