"""Which Kubernetes ServiceAccounts may send, and as whom: the ServiceAccount identities file.

One entry per line, `NAMESPACE/NAME:IDENTITY[,IDENTITY...]`; `NAMESPACE/*` stands for every
ServiceAccount of a namespace, and a line naming the account wins over its namespace's
wildcard. `#` starts a comment line, blank lines are ignored. Identities are those of the
users file (users.py `Identity.parse`): `app@example.com`, `example.com` or `@example.com`.

Names are checked as Kubernetes checks them (k8s.io/apimachinery validation): a namespace
is a DNS-1123 label (lower-case alphanumerics and `-`, at most 63 characters), a
ServiceAccount name a DNS-1123 subdomain (such labels joined by `.`, at most 253).

`ServiceAccountIdentitiesFile` re-reads the file when its modification time, size or inode
changed (a Secret or ConfigMap volume swaps a symlink), looking at most every
`check_interval` seconds; a file that fails to parse keeps the last good version in use and
logs an error, as the users file does; a file missing or broken at start is a ConfigError.
"""

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kubemta_common.logs import sanitize
from kubemta_ingress.users import Identity, UsersFileError
from kubemta_ingress.watched_file import CHECK_INTERVAL, WatchedFile

logger = logging.getLogger(__name__)

WILDCARD = "*"
USERNAME_PREFIX = "system:serviceaccount:"
"""How the API server names a ServiceAccount (k8s.io/apiserver serviceaccount.MakeUsername)."""
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"{_LABEL}\Z")
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
MAX_SUBDOMAIN = 253


class IdentitiesFileError(ValueError):
    """The ServiceAccount identities file (or one line of it) cannot be used."""


def valid_namespace(text: str) -> bool:
    """A DNS-1123 label, as Kubernetes requires of a namespace name."""
    return DNS1123_LABEL.match(text) is not None


def valid_name(text: str) -> bool:
    """A DNS-1123 subdomain, as Kubernetes requires of a ServiceAccount name."""
    return len(text) <= MAX_SUBDOMAIN and DNS1123_SUBDOMAIN.match(text) is not None


@dataclass(frozen=True, slots=True, order=True)
class ServiceAccount:
    """A ServiceAccount: its namespace and name (both valid Kubernetes names)."""

    namespace: str
    name: str

    @property
    def username(self) -> str:
        """`system:serviceaccount:NAMESPACE:NAME`, the name the API server gives it."""
        return f"{USERNAME_PREFIX}{self.namespace}:{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_username(cls, username: str) -> "ServiceAccount | None":
        """The account of `system:serviceaccount:NAMESPACE:NAME`; None for any other user name."""
        if not username.startswith(USERNAME_PREFIX):
            return None
        namespace, colon, name = username.removeprefix(USERNAME_PREFIX).partition(":")
        if not colon or not valid_namespace(namespace) or not valid_name(name):
            return None
        return cls(namespace, name)

    @classmethod
    def from_login(cls, login: str) -> "ServiceAccount | None":
        """The account an SMTP AUTH username names: `NAMESPACE/NAME` or `system:serviceaccount:NAMESPACE:NAME`."""
        if login.startswith(USERNAME_PREFIX):
            return cls.from_username(login)
        namespace, slash, name = login.partition("/")
        if not slash or not valid_namespace(namespace) or not valid_name(name):
            return None
        return cls(namespace, name)


@dataclass(frozen=True, slots=True)
class IdentityMap:
    """The parsed file: identities per account, and per namespace for its `NAMESPACE/*` line."""

    accounts: Mapping[ServiceAccount, tuple[Identity, ...]]
    namespaces: Mapping[str, tuple[Identity, ...]]

    def identities(self, account: ServiceAccount) -> tuple[Identity, ...] | None:
        """The identities of `account` (its own line first, else its namespace's wildcard); None when not listed."""
        found = self.accounts.get(account)
        if found is not None:
            return found
        return self.namespaces.get(account.namespace)

    def __len__(self) -> int:
        return len(self.accounts) + len(self.namespaces)


def parse_identity_map(text: str) -> IdentityMap:
    """Every entry of an identities file; raises IdentitiesFileError naming the first bad line or a duplicate."""
    accounts: dict[ServiceAccount, tuple[Identity, ...]] = {}
    namespaces: dict[str, tuple[Identity, ...]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        subject, colon, listed = entry.partition(":")
        namespace, slash, name = subject.strip().partition("/")
        if not colon or not slash:
            raise IdentitiesFileError(f"line {number}: expected NAMESPACE/NAME:IDENTITY[,IDENTITY...]")
        if not valid_namespace(namespace):
            raise IdentitiesFileError(f"line {number}: invalid namespace {sanitize(namespace)!r} (a DNS-1123 label)")
        if name != WILDCARD and not valid_name(name):
            raise IdentitiesFileError(
                f"line {number}: invalid ServiceAccount name {sanitize(name)!r} (a DNS-1123 subdomain, or *)"
            )
        try:
            identities = tuple(Identity.parse(item) for item in listed.split(",") if item.strip())
        except UsersFileError as exc:
            raise IdentitiesFileError(f"line {number} ({namespace}/{name}): {exc}") from None
        if not identities:
            raise IdentitiesFileError(f"line {number} ({namespace}/{name}): no identity")
        if name == WILDCARD:
            if namespace in namespaces:
                raise IdentitiesFileError(f"line {number}: duplicate entry {namespace}/*")
            namespaces[namespace] = identities
        else:
            account = ServiceAccount(namespace, name)
            if account in accounts:
                raise IdentitiesFileError(f"line {number}: duplicate entry {account}")
            accounts[account] = identities
    return IdentityMap(accounts, namespaces)


class ServiceAccountIdentitiesFile:
    """The identities file, re-read when it changes and kept at its last good version when it breaks (WatchedFile)."""

    def __init__(
        self, path: Path, *, check_interval: float = CHECK_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._file = WatchedFile(
            path,
            read_identity_map,
            setting="KUBEMTA_SERVICEACCOUNT_IDENTITIES_FILE",
            what="ServiceAccount identities file",
            describe=lambda identity_map: f"{len(identity_map)} entries",
            errors=(UnicodeDecodeError, IdentitiesFileError),
            check_interval=check_interval,
            clock=clock,
        )

    def identities(self, account: ServiceAccount) -> tuple[Identity, ...] | None:
        """The identities `account` may send as (the file is checked for changes first); None when not listed."""
        return self._file.value.identities(account)


def read_identity_map(path: Path) -> IdentityMap:
    """Parse the identities file at `path`; raises OSError, UnicodeDecodeError or IdentitiesFileError."""
    return parse_identity_map(path.read_text(encoding="utf-8"))
