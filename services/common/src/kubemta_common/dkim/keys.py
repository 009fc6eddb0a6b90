"""DKIM private keys read from the mounted Secret directory `KUBEMTA_DKIM_KEYS_DIR`.

Layout: `<domain>/<selector>.key`, one private key per file, either a PEM RSA key
(PKCS#1 or PKCS#8; signs rsa-sha256) or an Ed25519 key in dkimpy's format, the
base64-encoded 32-byte seed (signs ed25519-sha256, RFC 8463 §3). Kubernetes updates a
mounted Secret by swapping a `..data` symlink, so the directory is re-read when any
entry's modification time, size or target changes; that is checked at most every
`check_interval` seconds. A file that is not a usable key is logged and skipped;
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

import dkim.crypto  # type: ignore[import-untyped]

from kubemta_common.logs import sanitize

logger = logging.getLogger(__name__)

KEY_SUFFIX = ".key"
CHECK_INTERVAL = 5.0
ED25519_SEED_SIZE = 32
"""RFC 8032 §5.1.5: an Ed25519 private key is a 32-octet seed."""


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
    """The algorithm of a key file's content and the key as dkimpy takes it; KeyFileError when unusable."""
    text = data.replace(b"\r\n", b"\n").strip()
    if text.startswith(b"-----BEGIN"):
        try:
            dkim.crypto.parse_pem_private_key(text)
        except Exception as exc:  # dkimpy raises several unrelated types for bad input
            raise KeyFileError(f"not a PEM RSA private key: {exc}") from None
        return Algorithm.RSA_SHA256, text + b"\n"
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError("neither a PEM RSA key nor a base64 Ed25519 seed") from None
    if len(seed) != ED25519_SEED_SIZE:
        raise KeyFileError(f"an Ed25519 seed must be {ED25519_SEED_SIZE} octets, not {len(seed)}")
    return Algorithm.ED25519_SHA256, text


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
