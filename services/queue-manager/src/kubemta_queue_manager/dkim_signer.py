"""DKIM signing of a message's content with dkimpy (RFC 6376; Ed25519 per RFC 8463).

The signing domain (d=) is the domain of the message's single From: mailbox, or its
closest parent domain that has keys, so DMARC (RFC 7489 §3.1.1, relaxed alignment)
aligns. Every key of that domain signs: an RSA and an Ed25519 key give two signatures,
which RFC 8463 §4 recommends until Ed25519 is widely verified. Canonicalization is
relaxed/relaxed, there is never an `l=` tag (RFC 6376 §8.2). The signature headers are
prepended, above kubemta's own Received header, the RSA one topmost.

8-bit content is made 7-bit before it is signed (RFC 6376 §5.3: a signer SHOULD convert
a message that may be converted on its way to a 7-bit-safe encoding first), with the
converter the delivery worker uses for servers without 8BITMIME (kubemta_common.mime_7bit:
the 8-bit MIME leaf parts re-encoded, every other byte unchanged). What is signed is then
what every server gets, so the worker never has to convert signed mail and the signature
verifies as delivered. Header fields keep their 8-bit octets (they need SMTPUTF8, which
implies 8BITMIME); content that cannot be converted is signed as it is (the worker bounces
it with 5.6.3 for a server without 8BITMIME rather than change it). Only mail that is
signed is converted.
"""

import email.utils
import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

import dkim  # type: ignore[import-untyped]

from kubemta_common.logs import sanitize
from kubemta_common.mime_7bit import Unconvertible, to_7bit
from kubemta_mail_auth.dkim.keys import Algorithm, DkimKey, KeyStore
from kubemta_queue_manager import dkim_rsa

dkim_rsa.install()  # RSA by OpenSSL: dkimpy's own arithmetic costs 8.5 ms per signature

logger = logging.getLogger(__name__)

CANONICALIZATION = (b"relaxed", b"relaxed")
SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
"""Header fields signed when present (RFC 6376 §5.4.1's recommendations)."""
OVERSIGNED_HEADERS = frozenset(
    {"from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding"}
)
"""Listed once more than they occur (at least once), so adding one breaks the signature (RFC 6376 §8.15)."""


class Outcome(StrEnum):
    """Why a message was or was not signed (the `result` label of kubemta_dkim_signatures_total)."""

    SIGNED = "signed"
    ERROR = "error"
    NO_FROM = "no_from"
    NO_KEY = "no_key"


@dataclass
class SignResult:
    """The content to send (signed or not) and what happened per key."""

    content: bytes
    domain: str | None = None
    signed: list[DkimKey] = field(default_factory=list)
    failed: list[DkimKey] = field(default_factory=list)
    outcome: Outcome = Outcome.NO_KEY
    converted: bool = False
    """Its 8-bit MIME parts were made 7-bit before signing (seven_bit)."""


def include_headers(names: list[bytes]) -> list[bytes]:
    """The h= list for a message with header fields `names`: present ones, oversigned ones once more."""
    counts = Counter(name.decode("ascii", "replace").lower() for name in names)
    result: list[bytes] = []
    for name in SIGNED_HEADERS:
        times = counts[name] + (1 if name in OVERSIGNED_HEADERS else 0)
        result.extend([name.encode("ascii")] * times)
    return result


def from_domain(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ASCII (A-label) domain of the only mailbox in the only From: header, or None."""
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    addresses = email.utils.getaddresses([values[0].decode("utf-8", "replace")])
    if len(addresses) != 1:
        return None
    local, at, domain = addresses[0][1].rpartition("@")
    domain = domain.strip().rstrip(".")
    if not at or not local or not domain:
        return None
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


class DkimSigner:
    """Signs message content with the keys of its From: domain."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    def sign(self, content: bytes) -> SignResult:
        """`content` with one DKIM-Signature per key prepended; unchanged when no key applies or all fail."""
        headers = header_fields(content)
        domain = from_domain(headers)
        if domain is None:
            return SignResult(content, outcome=Outcome.NO_FROM)
        keys = sorted(self._keys.signing_keys(domain), key=_rsa_first)
        if not keys:
            return SignResult(content, domain=domain, outcome=Outcome.NO_KEY)
        content, converted = seven_bit(content)
        if converted:
            headers = header_fields(content)
        signed_names = include_headers([name for name, _ in headers])
        result = SignResult(content, domain=keys[0].domain, converted=converted)
        signatures: list[bytes] = []
        for key in keys:
            try:
                signatures.append(_sign_with(content, key, signed_names))
            except Exception as exc:  # dkimpy raises many types; a failed signature must never lose mail
                logger.error(
                    "DKIM signing with %s._domainkey.%s failed: %s", key.selector, key.domain, sanitize(str(exc))
                )
                result.failed.append(key)
            else:
                result.signed.append(key)
        result.content = b"".join(signatures) + content
        result.outcome = Outcome.SIGNED if result.signed else Outcome.ERROR
        return result


def header_fields(content: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of `content` as (name, value), read by the parser dkimpy's signer hashes them with."""
    headers: list[tuple[bytes, bytes]] = dkim.rfc822_parse(content)[0]
    return headers


def seven_bit(content: bytes) -> tuple[bytes, bool]:
    """`content` with its 8-bit MIME parts made 7-bit, and whether anything changed; as it is when it cannot be."""
    if content.isascii():
        return content, False
    converted = to_7bit(content, allow_8bit_headers=True)
    if isinstance(converted, Unconvertible):
        logger.debug("8-bit content signed as it is: %s", converted.reason)
        return content, False
    return converted, converted is not content


def _rsa_first(key: DkimKey) -> tuple[bool, str]:
    """RSA's signature goes on top: verifiers that know only RSA may check just the first one."""
    return key.algorithm is not Algorithm.RSA_SHA256, key.selector


def _sign_with(content: bytes, key: DkimKey, headers: list[bytes]) -> bytes:
    signer = dkim.DKIM(content, signature_algorithm=key.algorithm.value.encode("ascii"), linesep=b"\r\n")
    signature: bytes = signer.sign(
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private_key,
        canonicalize=CANONICALIZATION,
        include_headers=headers,
        length=False,
    )
    return signature


__all__ = ["Algorithm", "DkimSigner", "Outcome", "SignResult", "from_domain", "include_headers", "seven_bit"]
