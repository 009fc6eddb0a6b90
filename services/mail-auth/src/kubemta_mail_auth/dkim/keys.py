"""DKIM private keys read from the mounted Secret directory `KUBEMTA_DKIM_KEYS_DIR`.

Layout: `<domain>/<selector>.key`, one private key per file, in one of the forms of
ACCEPTED_FORMATS: an unencrypted PEM key, RSA (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8
`BEGIN PRIVATE KEY`; signs rsa-sha256) or Ed25519 (PKCS#8 `BEGIN PRIVATE KEY`, what
`openssl genpkey -algorithm ed25519` writes; signs ed25519-sha256, RFC 8463 §3), or an
Ed25519 key in dkimpy's form, the base64-encoded 32-octet seed. `cryptography` reads the PEM
and tells the key type; the key is then handed on in the form dkimpy's sign() takes (RSA:
PKCS#1 PEM; Ed25519: the base64 seed). Kubernetes updates a
mounted Secret by swapping a `..data` symlink, so the directory is re-read when any
entry's modification time, size or target changes; that is checked at most every
`check_interval` seconds. A file that is not a usable key is logged, naming the file, why,
and the accepted formats, and skipped (the service keeps running with the other keys);
names starting with `.` (the Secret's bookkeeping) are ignored. The public `<selector>.pub`
files `dkim generate` writes next to the keys are the domain check's (public_keys.py), not
read here.
"""

import base64
import binascii
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

KEY_SUFFIX = ".key"
CHECK_INTERVAL = 5.0
ED25519_SEED_SIZE = 32
"""RFC 8032 §5.1.5: an Ed25519 private key is a 32-octet seed."""
PEM_BEGIN = b"-----BEGIN "
"""RFC 7468 §2: the encapsulation boundary that starts a PEM (textual) key."""
ACCEPTED_FORMATS = (
    "an unencrypted PEM private key, RSA (PKCS#1 'BEGIN RSA PRIVATE KEY' or PKCS#8 'BEGIN PRIVATE KEY') "
    "or Ed25519 (PKCS#8 'BEGIN PRIVATE KEY', as from 'openssl genpkey -algorithm ed25519'), "
    "or an Ed25519 seed in dkimpy's form (32 octets, base64)"
)
"""What a `<selector>.key` file may hold, for every error about one."""
UNSUPPORTED_KINDS: tuple[tuple[type, str], ...] = (
    (ec.EllipticCurvePrivateKey, "EC (ECDSA)"),
    (dsa.DSAPrivateKey, "DSA"),
    (ed448.Ed448PrivateKey, "Ed448"),
    (x25519.X25519PrivateKey, "X25519"),
    (x448.X448PrivateKey, "X448"),
)
"""Key types a PEM may hold that DKIM cannot sign with (RFC 6376 §3.3, RFC 8463 §3), named for the error."""


class Algorithm(StrEnum):
    """The DKIM signing algorithms kubemta uses (RFC 6376 §3.3, RFC 8463 §3)."""

    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"


@dataclass(frozen=True)
class DkimKey:
    """One private key: its signing domain, selector, algorithm and the key as dkimpy's sign() takes it."""

    domain: str
    selector: str
    algorithm: Algorithm
    private_key: bytes


class KeyFileError(ValueError):
    """A key file that is not a usable DKIM private key."""


def parse_key(data: bytes) -> tuple[Algorithm, bytes]:
    """The algorithm of a key file's content and the key as dkimpy takes it; KeyFileError when unusable.

    The error's text says why and lists ACCEPTED_FORMATS; the caller names the file.
    """
    text = data.replace(b"\r\n", b"\n").strip()
    try:
        if PEM_BEGIN in text:
            return _parse_pem(text)
        return Algorithm.ED25519_SHA256, _parse_seed(text)
    except KeyFileError as exc:
        raise KeyFileError(f"{exc}; accepted: {ACCEPTED_FORMATS}") from None


def _parse_pem(text: bytes) -> tuple[Algorithm, bytes]:
    """An RSA key as PKCS#1 PEM or an Ed25519 key as dkimpy's base64 seed, from any PEM `cryptography` reads."""
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:  # cryptography's answer to an encrypted key read without a password
        raise KeyFileError("an encrypted PEM key (kubemta has no passphrase; decrypt it with openssl pkey)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"not a readable PEM private key ({_first_line(exc)})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        return Algorithm.RSA_SHA256, pem
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return Algorithm.ED25519_SHA256, base64.b64encode(seed)
    kind = next((name for cls, name in UNSUPPORTED_KINDS if isinstance(key, cls)), type(key).__name__)
    raise KeyFileError(f"a PEM {kind} key: DKIM signs with RSA (rsa-sha256) or Ed25519 (ed25519-sha256) only")


def _parse_seed(text: bytes) -> bytes:
    """dkimpy's Ed25519 form, the base64 32-octet seed, checked."""
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("neither a PEM key nor a base64 Ed25519 seed") from None
    if len(seed) != ED25519_SEED_SIZE:
        raise KeyFileError(f"an Ed25519 seed must be {ED25519_SEED_SIZE} octets, not {len(seed)}")
    return text


def _first_line(exc: Exception) -> str:
    """The first line of an exception's text (cryptography's may carry OpenSSL's error stack)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def load_keys(directory: Path) -> dict[str, list[DkimKey]]:
    """All usable keys under `directory`, by lower-cased domain, each domain's keys sorted by selector.

    Only `<selector>.key` files are read: the public `<selector>.pub` files next to them (PublicKeyStore's) and
    anything else are ignored.
    """
    keys: dict[str, list[DkimKey]] = {}
    for domain_dir in sorted(entries(directory)):
        if not domain_dir.is_dir():
            continue
        domain = domain_dir.name.lower().rstrip(".")
        for path in sorted(entries(domain_dir)):
            if path.suffix != KEY_SUFFIX or not path.is_file():
                continue
            try:
                algorithm, private_key = parse_key(path.read_bytes())
            except (KeyFileError, OSError) as exc:
                logger.error("skipping DKIM key %s: %s", sanitize(str(path)), exc)
                continue
            keys.setdefault(domain, []).append(DkimKey(domain, path.stem, algorithm, private_key))
    return keys


def entries(directory: Path) -> list[Path]:
    """The entries of `directory` except those starting with `.` (a mounted Secret's bookkeeping); [] if unreadable."""
    try:
        return [path for path in directory.iterdir() if not path.name.startswith(".")]
    except OSError as exc:
        logger.error("cannot read DKIM key directory %s: %s", sanitize(str(directory)), exc)
        return []


def fingerprint(directory: Path) -> tuple[tuple[str, str, int, int], ...]:
    """What changes when a key is added, removed, replaced or its Secret updated: names, targets, mtimes, sizes."""
    items: list[tuple[str, str, int, int]] = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        for name in [*dirs, *files]:
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            items.append((path, os.path.realpath(path), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(items))


class KeyDirectory[K]:
    """Keys read from `directory` by `load` (by lower-cased domain), re-read when the directory changed.

    The change check runs at most every `check_interval` seconds, on a lookup. KeyStore (private keys, the signer)
    and PublicKeyStore (public keys, the domain check) are its two kinds.
    """

    kind = "DKIM keys"
    """What the keys are, for the log line after each (re)load."""

    def __init__(
        self,
        directory: Path,
        load: Callable[[Path], dict[str, list[K]]],
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._load = load
        self._check_interval = check_interval
        self._clock = clock
        self._fingerprint = fingerprint(directory)
        self._keys = load(directory)
        self._checked = clock()
        self._log_loaded()

    def keys_for(self, domain: str) -> list[K]:
        """The keys of exactly `domain` (case-insensitive)."""
        self._refresh()
        return list(self._keys.get(domain.lower().rstrip("."), []))

    def _closest_keys(self, domain: str) -> list[K]:
        """The keys of `domain` or, when it has none, of its closest parent domain that has keys."""
        self._refresh()
        labels = domain.lower().rstrip(".").split(".")
        for start in range(len(labels)):
            keys = self._keys.get(".".join(labels[start:]))
            if keys:
                return list(keys)
        return []

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._check_interval:
            return
        self._checked = now
        current = fingerprint(self._directory)
        if current != self._fingerprint:
            self._fingerprint = current
            self._keys = self._load(self._directory)
            self._log_loaded()

    def _log_loaded(self) -> None:
        count = sum(len(keys) for keys in self._keys.values())
        logger.info("loaded %d %s for %d domains from %s", count, self.kind, len(self._keys), self._directory)


class KeyStore(KeyDirectory[DkimKey]):
    """The private keys of `directory` (`<selector>.key` files only), re-read when it changed."""

    def __init__(
        self,
        directory: Path,
        *,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(directory, load_keys, check_interval=check_interval, clock=clock)

    def signing_keys(self, domain: str) -> list[DkimKey]:
        """The keys of `domain` or, when it has none, of its closest parent domain that has keys."""
        return self._closest_keys(domain)
