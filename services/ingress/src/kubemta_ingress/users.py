"""The users file: who may AUTH, with which password, and as which senders.

One user per line, `username:hash:identity1,identity2,...`; `#` starts a comment
line, blank lines are ignored. An identity is a full address (`app@example.com`,
that address only) or a domain (`example.com` or `@example.com`, any address at
that domain). The file is mounted from a Kubernetes Secret and written by
`kubemta-admin users add` (cli.py).

Passwords are stored as `$scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt b64>$<hash b64>`
(scrypt, RFC 7914, from the standard library's `hashlib.scrypt`; the layout is that
of the PHC string format). Any other hash format, including a plain-text password,
is refused when the file is read, naming the line but never its content.

`UsersFile` re-reads the file when its modification time or size changed, looking
at most every `check_interval` seconds; a file that fails to parse keeps the last
good version in use and logs an error; a file missing at start is a ConfigError.
"""

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubemta_common.logs import sanitize
from kubemta_ingress.policy import canonical_domain, check_address, split_address
from kubemta_ingress.watched_file import CHECK_INTERVAL, WatchedFile

logger = logging.getLogger(__name__)

SCHEME = "scrypt"
DEFAULT_LOG2_N = 14  # N = 16384, r = 8, p = 1: 16 MiB and ~50 ms per verification (RFC 7914 section 2)
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_LOG2_N, MAX_LOG2_N = 10, 20  # bounds so a bad file cannot make one verification take minutes
MAX_R, MAX_P = 32, 16

_USERNAME = re.compile(r"[A-Za-z0-9._@+=-]{1,256}\Z")
_HASH = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})\$(?P<salt>[A-Za-z0-9+/]+={0,2})"
    r"\$(?P<hash>[A-Za-z0-9+/]+={0,2})\Z"
)


class UsersFileError(ValueError):
    """The users file (or one entry) cannot be used; the message never holds a password or hash."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A sender identity: one address, or every address at a domain."""

    address: str | None
    """The lower-case address, or None for a domain identity."""
    domain: str
    """The canonical domain (lower case A-labels)."""

    @classmethod
    def parse(cls, text: str) -> "Identity":
        """`app@example.com`, `example.com` or `@example.com`; raises UsersFileError when malformed."""
        text = text.strip()
        if text.startswith("@"):
            text = text[1:]
        if "@" in text:
            if check_address(text, smtputf8=True) is not None:
                raise UsersFileError(f"malformed identity address {sanitize(text)!r}")
            local, domain = split_address(text)
            canonical = canonical_domain(domain)
            if canonical is None:
                raise UsersFileError(f"malformed identity domain {sanitize(domain)!r}")
            return cls(f"{local.lower()}@{canonical}", canonical)
        canonical = canonical_domain(text)
        if canonical is None or text.endswith("."):
            raise UsersFileError(f"malformed identity domain {sanitize(text)!r}")
        return cls(None, canonical)

    def __str__(self) -> str:
        return self.address if self.address is not None else self.domain


@dataclass(frozen=True, slots=True)
class User:
    """One entry of the users file."""

    name: str
    password_hash: str
    identities: tuple[Identity, ...]

    def line(self) -> str:
        """The entry as a line of the users file."""
        return f"{self.name}:{self.password_hash}:{','.join(str(identity) for identity in self.identities)}"


@dataclass(frozen=True, slots=True)
class ScryptParameters:
    """The cost parameters and salt of one stored scrypt hash."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def hash_password(password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new `$scrypt$...` hash of `password` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, log2_n, r, p, HASH_BYTES)
    return f"${SCHEME}$ln={log2_n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def parse_hash(text: str) -> ScryptParameters:
    """The parameters of a `$scrypt$` hash; raises UsersFileError for any other format."""
    match = _HASH.match(text)
    if match is None:
        raise UsersFileError("password is not a $scrypt$ hash (plain-text or unknown format refused)")
    log2_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    if not (MIN_LOG2_N <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise UsersFileError(f"scrypt parameters out of range (ln {MIN_LOG2_N}-{MAX_LOG2_N}, r 1-{MAX_R}, p 1-{MAX_P})")
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        digest = base64.b64decode(match["hash"], validate=True)
    except ValueError as exc:
        raise UsersFileError("scrypt salt or hash is not valid base64") from exc
    if not salt or len(digest) < 16:
        raise UsersFileError("scrypt salt is empty or hash too short")
    return ScryptParameters(log2_n, r, p, salt, digest)


def verify_password(password: bytes, stored: str) -> bool:
    """True when `password` matches the stored hash (constant-time comparison)."""
    try:
        params = parse_hash(stored)
    except UsersFileError:
        return False
    digest = _scrypt(password, params.salt, params.log2_n, params.r, params.p, len(params.digest))
    return hmac.compare_digest(digest, params.digest)


def _scrypt(password: bytes, salt: bytes, log2_n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=128 * r * (n + p + 2) + 1024 * 1024, dklen=length)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_line(line: str, number: int) -> User | None:
    """The user on line `number`, None for a comment or blank line; raises UsersFileError naming the line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(":")
    if len(parts) != 3:
        raise UsersFileError(f"line {number}: expected username:hash:identities")
    name, password_hash, identities = (part.strip() for part in parts)
    if not _USERNAME.match(name):
        raise UsersFileError(f"line {number}: invalid username {sanitize(name)!r}")
    try:
        parse_hash(password_hash)
        parsed = tuple(Identity.parse(item) for item in identities.split(",") if item.strip())
    except UsersFileError as exc:
        raise UsersFileError(f"line {number} (user {name}): {exc}") from None
    return User(name, password_hash, parsed)


def parse_users(text: str) -> dict[str, User]:
    """Every user in the text of a users file; raises UsersFileError for the first bad line or a duplicate."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        user = parse_line(line, number)
        if user is None:
            continue
        if user.name in users:
            raise UsersFileError(f"line {number}: duplicate user {user.name}")
        users[user.name] = user
    return users


def valid_username(name: str) -> bool:
    """True when `name` may be used as a username (no `:`, no spaces, no control characters)."""
    return bool(_USERNAME.match(name))


def read_users(path: Path) -> dict[str, User]:
    """Parse the users file at `path`; raises OSError or UsersFileError."""
    return parse_users(path.read_text(encoding="utf-8"))


class UsersFile:
    """The users file, re-read when it changes and kept at its last good version when it breaks (WatchedFile)."""

    def __init__(
        self, path: Path, *, check_interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._file = WatchedFile(
            path,
            read_users,
            setting="KUBEMTA_USERS_FILE",
            what="users file",
            describe=lambda users: f"{len(users)} users",
            errors=(UsersFileError,),
            check_interval=check_interval,
            clock=clock,
        )

    @property
    def users(self) -> Mapping[str, User]:
        """The current users (the file is checked for changes first)."""
        return self._file.value

    def get(self, name: str) -> User | None:
        """The user called `name`, or None."""
        return self.users.get(name)


def render(users: Iterable[User], header: Iterable[str] = ()) -> str:
    """The text of a users file holding `users`, after the comment lines in `header`."""
    return "".join(f"{line}\n" for line in [*header, *(user.line() for user in users)])
