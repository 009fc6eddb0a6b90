"""API keys for the HTTP API: the keys file, and the TokenVerifier (api_auth.py) that knows its keys.

A key is `kmta_<keyid>_<secret>` (61 characters, a valid RFC 6750 §2.1 b64token):

- `keyid`: 12 lower-case hex digits, random. It is public: stored in clear, it finds the
  key's entry without trying every hash, and names the key in logs and `kubemta-admin
  api-keys list`. The `kmta_` prefix tells the key apart from the other bearer tokens
  (the operator's token, ServiceAccount JWTs) and lets secret scanners recognise it.
- `secret`: 43 characters, base64url (RFC 4648 §5, no padding) of 32 bytes from `secrets`.

The file stores the SHA-256 of the secret's text, in hex. A 256-bit random secret cannot be
guessed or brute-forced from its hash, so it needs no slow, salted hash as passwords do
(users.py uses scrypt); a fast check keeps the per-request cost of the API low. The check
compares digests with `hmac.compare_digest`, and an unknown keyid is compared against a
dummy digest, so a request takes the same work whether its keyid exists or not.

One key per line, `NAME:KEYID:sha256:HEX:IDENTITY[,IDENTITY...]`; `#` starts a comment line,
blank lines are ignored. NAME follows the users file's usernames; an identity is what a
user's is (`app@example.com`, `example.com`, `@example.com`; users.Identity). Each key needs
at least one identity (a key that may send as nobody is useless). Names and keyids are
unique; a bad line is refused naming its number, never showing a hash.

Rotation without downtime: `kubemta-admin api-keys rotate NAME --keep-old` gives NAME a new
key and keeps the old one as `NAME~old` until `remove NAME~old`. Both keys authenticate as
the same principal, `apikey:NAME`, so the submitter on the bus does not change during the
overlap. `~old` is the only suffix a name may carry besides the username characters.

`ApiKeysFile` re-reads the file when its modification time, size or inode changed, looking at
most every `check_interval` seconds; a file that fails to parse keeps the last good version in
use and logs an error once; a file missing at start is a ConfigError (as users.UsersFile).
"""

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter

from kubemta_common.logs import sanitize
from kubemta_common.metrics import preinitialise
from kubemta_ingress.api_auth import Principal
from kubemta_ingress.settings import IngressSettings
from kubemta_ingress.users import Identity, UsersFileError, valid_username
from kubemta_ingress.watched_file import CHECK_INTERVAL, WatchedFile

logger = logging.getLogger(__name__)

PREFIX = "kmta_"
KEYID_HEX = 12
"""48 random bits: enough that generated keyids do not collide; the CLI still checks."""
SECRET_BYTES = 32
SECRET_LENGTH = 43
"""base64url of 32 bytes without padding: ceil(32 * 8 / 6)."""
KEY_LENGTH = len(PREFIX) + KEYID_HEX + 1 + SECRET_LENGTH
SCHEME = "sha256"
OLD_SUFFIX = "~old"
"""The name of a key kept for a rotation's overlap: `NAME~old`; it authenticates as NAME."""
PRINCIPAL_KIND = "api-key"

_KEY = re.compile(rf"{PREFIX}(?P<keyid>[0-9a-f]{{{KEYID_HEX}}})_(?P<secret>[A-Za-z0-9_-]{{{SECRET_LENGTH}}})\Z")
_KEYID = re.compile(rf"[0-9a-f]{{{KEYID_HEX}}}\Z")
_DIGEST_HEX = re.compile(r"[0-9a-fA-F]{64}\Z")
_DUMMY_DIGEST = hashlib.sha256(b"no key has this digest").digest()

API_KEY_CHECKS = Counter(
    "kubemta_api_key_checks_total",
    "Bearer tokens shaped like API keys (kmta_...) checked against the API keys file, by result: ok, unknown "
    "(no such keyid, or a wrong secret), malformed (the kmta_ prefix, but not the shape of a key); other tokens "
    "are not counted",
    ["result"],
)
RESULTS = ("ok", "unknown", "malformed")
preinitialise(API_KEY_CHECKS, result=RESULTS)


class ApiKeysFileError(ValueError):
    """The API keys file (or one entry) cannot be used; the message never holds a hash or a key."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One entry of the API keys file."""

    name: str
    keyid: str
    digest: bytes = field(repr=False)
    """SHA-256 of the secret's text (32 bytes); never printed."""
    identities: tuple[Identity, ...]

    @property
    def principal_name(self) -> str:
        """The name the key authenticates as: `apikey:NAME`, the same for `NAME~old`."""
        return f"apikey:{self.name.removesuffix(OLD_SUFFIX)}"

    def line(self) -> str:
        """The entry as a line of the API keys file."""
        identities = ",".join(str(identity) for identity in self.identities)
        return f"{self.name}:{self.keyid}:{SCHEME}:{self.digest.hex()}:{identities}"


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the entry to store, and the key to hand over once (nowhere stored)."""

    entry: ApiKey
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """The parsed file: every key by name and by keyid."""

    by_name: dict[str, ApiKey]
    by_keyid: dict[str, ApiKey]


def valid_name(name: str) -> bool:
    """True when `name` may name a key: a username (users.py), optionally followed by `~old`."""
    return valid_username(name.removesuffix(OLD_SUFFIX))


def digest_of(secret: str) -> bytes:
    """SHA-256 of a key's secret part."""
    return hashlib.sha256(secret.encode("ascii")).digest()


def new_key(name: str, identities: Iterable[Identity], *, taken: Iterable[str] = ()) -> NewKey:
    """A new random key for `name`, with a keyid not in `taken`."""
    taken_ids = set(taken)
    keyid = secrets.token_hex(KEYID_HEX // 2)
    while keyid in taken_ids:
        keyid = secrets.token_hex(KEYID_HEX // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return NewKey(ApiKey(name, keyid, digest_of(secret), tuple(identities)), f"{PREFIX}{keyid}_{secret}")


def split_key(token: str) -> tuple[str, str] | None:
    """(keyid, secret) of a token shaped like an API key; None otherwise. The length is checked first."""
    if len(token) != KEY_LENGTH:
        return None
    match = _KEY.match(token)
    if match is None:
        return None
    return match["keyid"], match["secret"]


def parse_line(line: str, number: int) -> ApiKey | None:
    """The key on line `number`, None for a comment or blank line; raises ApiKeysFileError naming the line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(":")
    if len(parts) != 5:
        raise ApiKeysFileError(f"line {number}: expected name:keyid:sha256:hex:identities")
    name, keyid, scheme, digest_hex, identities = (part.strip() for part in parts)
    if not valid_name(name):
        raise ApiKeysFileError(f"line {number}: invalid key name {sanitize(name)!r}")
    if not _KEYID.match(keyid):
        raise ApiKeysFileError(f"line {number} (key {name}): the keyid is not {KEYID_HEX} lower-case hex digits")
    if scheme != SCHEME or not _DIGEST_HEX.match(digest_hex):
        raise ApiKeysFileError(f"line {number} (key {name}): the hash is not sha256:<64 hex digits>")
    try:
        parsed = tuple(Identity.parse(item) for item in identities.split(",") if item.strip())
    except UsersFileError as exc:
        raise ApiKeysFileError(f"line {number} (key {name}): {exc}") from None
    if not parsed:
        raise ApiKeysFileError(f"line {number} (key {name}): no identity (a key must be allowed some sender)")
    return ApiKey(name, keyid, bytes.fromhex(digest_hex), parsed)


def parse_api_keys(text: str) -> ApiKeys:
    """Every key in the text of an API keys file; raises ApiKeysFileError for the first bad line or a duplicate."""
    by_name: dict[str, ApiKey] = {}
    by_keyid: dict[str, ApiKey] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        key = parse_line(line, number)
        if key is None:
            continue
        if key.name in by_name:
            raise ApiKeysFileError(f"line {number}: duplicate key name {key.name}")
        if key.keyid in by_keyid:
            raise ApiKeysFileError(f"line {number} (key {key.name}): keyid already used by {by_keyid[key.keyid].name}")
        by_name[key.name] = key
        by_keyid[key.keyid] = key
    return ApiKeys(by_name, by_keyid)


def read_api_keys(path: Path) -> ApiKeys:
    """Parse the API keys file at `path`; raises OSError or ApiKeysFileError."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ApiKeysFileError(f"not UTF-8 text (byte {exc.start})") from None
    return parse_api_keys(text)


def render(keys: Iterable[ApiKey], header: Iterable[str] = ()) -> str:
    """The text of an API keys file holding `keys`, after the comment lines in `header`."""
    return "".join(f"{line}\n" for line in [*header, *(key.line() for key in keys)])


class ApiKeysFile:
    """The API keys file, re-read when it changes and kept at its last good version when it breaks (WatchedFile)."""

    def __init__(
        self, path: Path, *, check_interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._file = WatchedFile(
            path,
            read_api_keys,
            setting="KUBEMTA_API_KEYS_FILE",
            what="API keys file",
            describe=lambda keys: f"{len(keys.by_name)} keys",
            errors=(ApiKeysFileError,),
            check_interval=check_interval,
            clock=clock,
        )

    @property
    def keys(self) -> ApiKeys:
        """The current keys (the file is checked for changes first)."""
        return self._file.value

    def by_keyid(self, keyid: str) -> ApiKey | None:
        """The key with this keyid, or None."""
        return self.keys.by_keyid.get(keyid)


class ApiKeyVerifier:
    """The TokenVerifier (api_auth.py) of the API keys file.

    Tokens without the `kmta_` prefix belong to other verifiers: None, not counted. A
    prefixed token of the wrong shape is `malformed`; a well-shaped one is hashed and
    compared with its keyid's digest, or with a dummy digest when no key has that keyid,
    so both failures (`unknown`) cost the same. Never raises for any string.
    """

    def __init__(self, keys: ApiKeysFile) -> None:
        self._keys = keys

    async def verify(self, token: str) -> Principal | None:
        return self.check(token)

    def check(self, token: str) -> Principal | None:
        """The synchronous check behind `verify`."""
        if not token.startswith(PREFIX):
            return None
        parts = split_key(token)
        if parts is None:
            API_KEY_CHECKS.labels(result="malformed").inc()
            return None
        keyid, secret = parts
        key = self._keys.by_keyid(keyid)
        expected = key.digest if key is not None else _DUMMY_DIGEST
        if not hmac.compare_digest(digest_of(secret), expected) or key is None:
            API_KEY_CHECKS.labels(result="unknown").inc()
            if key is not None:
                logger.info("API key %s (keyid %s): wrong secret", key.name, keyid)
            return None
        API_KEY_CHECKS.labels(result="ok").inc()
        return Principal(kind=PRINCIPAL_KIND, name=key.principal_name, identities=key.identities)


def build_api_key_verifier(settings: IngressSettings) -> ApiKeyVerifier | None:
    """The verifier of `KUBEMTA_API_KEYS_FILE`; None when unset. Raises ConfigError for a missing or broken file."""
    if settings.api_keys_file is None:
        return None
    return ApiKeyVerifier(ApiKeysFile(settings.api_keys_file))
