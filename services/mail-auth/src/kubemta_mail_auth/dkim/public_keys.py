"""DKIM public keys read from the keys directory `KUBEMTA_DKIM_KEYS_DIR`, for the domain check.

Layout: `<domain>/<selector>.pub` holds the key's DNS TXT record value (RFC 6376 §3.6.1),
`v=DKIM1; k=rsa; p=...` on one line, as `kubemta-admin dkim generate` writes it next
to the private key. Public keys are all the domain check needs, so the ingress (the
internet-facing pod) is given only `.pub` files and never a signing key. A directory of
private keys works too: a selector with only `<selector>.key` gets the public key derived
from it (records.public_key), in any form the signer reads (keys.ACCEPTED_FORMATS: PEM RSA or
Ed25519, or dkimpy's Ed25519 seed). When both files exist and hold different keys, that is logged
as an error and the `.key`'s public key is used: it is the key that signs. A file that is
not a usable key is logged, naming the file (and for a `.key`, the accepted formats), and
treated as absent. The directory is re-read when it changes,
as KeyStore does (keys.KeyDirectory).
"""

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kubemta_common.logs import sanitize
from kubemta_mail_auth.dkim.keys import (
    CHECK_INTERVAL,
    KEY_SUFFIX,
    Algorithm,
    KeyDirectory,
    KeyFileError,
    entries,
)
from kubemta_mail_auth.dkim.records import KEY_TYPES, RecordError, parse_record, public_key, same_key

logger = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".pub"
ALGORITHMS = {key_type: algorithm for algorithm, key_type in KEY_TYPES.items()}
"""The signing algorithm of each k= value kubemta signs with."""
ED25519_PUBLIC_SIZE = 32
"""RFC 8032 §5.1.5: an Ed25519 public key is 32 octets."""


@dataclass(frozen=True)
class PublicKey:
    """One selector's public key: its signing domain, selector, algorithm and base64 p= value."""

    domain: str
    selector: str
    algorithm: Algorithm
    public: str
    source: str
    """The file it comes from, `<domain>/<selector>.pub` or `.key`, for messages."""


def parse_public_key(data: bytes) -> tuple[Algorithm, str]:
    """The algorithm and base64 p= value of a `.pub` file's content (a record value); KeyFileError when unusable."""
    try:
        published = parse_record(data.decode("ascii").strip())
    except (UnicodeDecodeError, RecordError) as exc:
        raise KeyFileError(f"not a DKIM key record value (v=DKIM1; k=...; p=...): {exc}") from None
    algorithm = ALGORITHMS.get(published.key_type)
    if algorithm is None:
        raise KeyFileError(f"k={published.key_type} is not a key type kubemta signs with")
    if not published.public:
        raise KeyFileError("p= is empty (a revoked key)")
    raw = base64.b64decode(published.public)
    if algorithm is Algorithm.ED25519_SHA256:
        if len(raw) != ED25519_PUBLIC_SIZE:
            raise KeyFileError(f"an Ed25519 public key must be {ED25519_PUBLIC_SIZE} octets, not {len(raw)}")
        return algorithm, published.public
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("p= is not a DER RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFileError("k=rsa but p= holds another kind of key")
    return algorithm, published.public


def load_public_keys(directory: Path) -> dict[str, list[PublicKey]]:
    """The public key of every selector under `directory`, by lower-cased domain, each domain's sorted by selector."""
    keys: dict[str, list[PublicKey]] = {}
    for domain_dir in sorted(entries(directory)):
        if not domain_dir.is_dir():
            continue
        domain = domain_dir.name.lower().rstrip(".")
        files = {
            path.name: path
            for path in entries(domain_dir)
            if path.suffix in (KEY_SUFFIX, PUBLIC_SUFFIX) and path.is_file()
        }
        for selector in sorted({Path(name).stem for name in files}):
            key = _selector_key(domain, selector, files.get(selector + KEY_SUFFIX), files.get(selector + PUBLIC_SUFFIX))
            if key is not None:
                keys.setdefault(domain, []).append(key)
    return keys


def _selector_key(domain: str, selector: str, private_file: Path | None, public_file: Path | None) -> PublicKey | None:
    """The public key of one selector: the `.key`'s when it is usable, else the `.pub`'s."""
    derived = _read(private_file, public_key) if private_file is not None else None
    given = _read(public_file, parse_public_key) if public_file is not None else None
    if derived is not None and given is not None and not _agree(derived, given):
        logger.error(
            "DKIM public key %s is not the public key of %s (the key that signs); using the latter's",
            sanitize(str(public_file)),
            sanitize(str(private_file)),
        )
    if derived is not None and private_file is not None:
        return _public_key(domain, selector, derived, private_file)
    if given is not None and public_file is not None:
        return _public_key(domain, selector, given, public_file)
    return None


def _read(path: Path, parse: Callable[[bytes], tuple[Algorithm, str]]) -> tuple[Algorithm, str] | None:
    try:
        return parse(path.read_bytes())
    except (KeyFileError, OSError) as exc:
        logger.error("skipping DKIM key %s: %s", sanitize(str(path)), exc)
        return None


def _agree(derived: tuple[Algorithm, str], given: tuple[Algorithm, str]) -> bool:
    algorithm, public = derived
    return given[0] is algorithm and same_key(given[1], public, KEY_TYPES[algorithm])


def _public_key(domain: str, selector: str, key: tuple[Algorithm, str], path: Path) -> PublicKey:
    return PublicKey(domain, selector, key[0], key[1], f"{path.parent.name}/{path.name}")


class PublicKeyStore(KeyDirectory[PublicKey]):
    """The public keys of `directory` (`.pub` files, else derived from `.key` files), re-read when it changed."""

    kind = "DKIM public keys"

    def __init__(
        self,
        directory: Path,
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(directory, load_public_keys, check_interval=check_interval, clock=clock)

    def published_keys(self, domain: str) -> list[PublicKey]:
        """The keys to publish for mail from `domain`: its own or, when it has none, its closest parent's with keys.

        That parent is the d= the queue-manager signs with (KeyStore.signing_keys).
        """
        return self._closest_keys(domain)
