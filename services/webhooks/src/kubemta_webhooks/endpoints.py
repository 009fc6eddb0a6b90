"""The endpoints file (`KUBEMTA_WEBHOOKS_FILE`): who gets which webhooks, at which URL, signed with which secret.

The file is a JSON list of objects (docs/webhooks.md):

    [{"name": "billing", "url": "https://billing.example/hooks/mail", "secret": "whsec_...",
      "submitters": ["system:serviceaccount:shop:billing"], "events": ["delivered", "bounced"],
      "tags": ["invoice"]}]

It comes from a Secret an operator writes, but is still checked as if hostile: the size is bounded,
every field has a type, a length and a syntax, unknown keys are refused (a typo must not silently
widen or narrow what an app gets), and no error message echoes a secret. `EndpointsFile` re-reads
the file when its content changes (a mounted Secret is replaced by a symlink swap) and keeps the last
good list when the new content is invalid.
"""

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubemta_webhooks.signing import secret_bytes

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 1024 * 1024
MAX_ENDPOINTS = 1000
MAX_URL = 2048
MAX_LIST = 1000
MAX_ITEM = 256
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
"""An endpoint's name: also the `endpoint` label of its metrics (the file bounds their number)."""
EVENT_KINDS = frozenset({"delivered", "deferred", "bounced", "expired"})
ALL_SUBMITTERS = "*"
_KEYS = frozenset({"name", "url", "secret", "submitters", "events", "tags"})
_REQUIRED = ("name", "url", "secret", "submitters", "events")


class EndpointsError(ValueError):
    """The endpoints file is invalid (the message names the entry and field, never a secret)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One webhook endpoint."""

    name: str
    url: str
    key: bytes
    """The HMAC key (signing.secret_bytes of the configured secret)."""
    submitters: frozenset[str]
    """Whose mail it gets: exact submitter names, or "*" for all mail."""
    events: frozenset[str]
    tags: frozenset[str]
    """Empty: every message; else only messages carrying at least one of these tags."""

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, url={self.url!r}, events={sorted(self.events)})"


def _strings(entry: dict[str, Any], field: str, where: str, *, allow_empty: bool) -> frozenset[str]:
    value = entry.get(field, [])
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise EndpointsError(f"{where}: {field!r} must be a list of at most {MAX_LIST} strings")
    if not value and not allow_empty:
        raise EndpointsError(f"{where}: {field!r} must not be empty")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > MAX_ITEM or not item.isprintable():
            raise EndpointsError(f"{where}: {field!r} holds printable strings of 1-{MAX_ITEM} characters")
    return frozenset(value)


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URL or not value.isascii():
        raise EndpointsError(f"{where}: 'url' must be an ASCII string of 1-{MAX_URL} characters")
    if any(ord(char) <= 0x20 or char == "\x7f" for char in value):
        raise EndpointsError(f"{where}: 'url' must not hold spaces or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise EndpointsError(f"{where}: 'url' is not a valid URL") from None
    del port
    if parts.scheme not in ("http", "https"):
        raise EndpointsError(f"{where}: 'url' must be http:// or https://")
    if not parts.hostname:
        raise EndpointsError(f"{where}: 'url' has no host")
    if "@" in parts.netloc:
        raise EndpointsError(f"{where}: 'url' must not hold a user name or password (use the secret)")
    if parts.fragment:
        raise EndpointsError(f"{where}: 'url' must not hold a #fragment")
    return value


def _endpoint(entry: Any, index: int) -> Endpoint:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        raise EndpointsError(f"{where} is not an object")
    unknown = set(entry) - _KEYS
    if unknown:
        shown = ", ".join(repr(key)[:40] for key in sorted(str(key) for key in unknown)[:5])
        raise EndpointsError(f"{where}: unknown keys {shown}")
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise EndpointsError(f"{where}: missing {', '.join(missing)}")
    name = entry["name"]
    if not isinstance(name, str) or not NAME.match(name):
        raise EndpointsError(f"{where}: 'name' is 1-64 of a-z 0-9 . _ - (starting with a letter or digit)")
    where = f"entry {index} ({name})"
    url = _url(entry["url"], where)
    secret = entry["secret"]
    if not isinstance(secret, str):
        raise EndpointsError(f"{where}: 'secret' must be a string")
    try:
        key = secret_bytes(secret)
    except ValueError as exc:
        raise EndpointsError(f"{where}: 'secret': {exc}") from None
    submitters = _strings(entry, "submitters", where, allow_empty=False)
    events = _strings(entry, "events", where, allow_empty=False)
    if not events <= EVENT_KINDS:
        raise EndpointsError(f"{where}: 'events' are some of {', '.join(sorted(EVENT_KINDS))}")
    tags = _strings(entry, "tags", where, allow_empty=True)
    return Endpoint(name, url, key, submitters, events, tags)


def parse_endpoints(data: bytes) -> dict[str, Endpoint]:
    """The endpoints in a file's content, by name; EndpointsError when anything in it is invalid."""
    if len(data) > MAX_FILE_BYTES:
        raise EndpointsError(f"the file has more than {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EndpointsError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(document, list):
        raise EndpointsError("the file must hold a JSON list of endpoints")
    if len(document) > MAX_ENDPOINTS:
        raise EndpointsError(f"more than {MAX_ENDPOINTS} endpoints")
    endpoints: dict[str, Endpoint] = {}
    for index, entry in enumerate(document, start=1):
        endpoint = _endpoint(entry, index)
        if endpoint.name in endpoints:
            raise EndpointsError(f"entry {index}: the name {endpoint.name!r} is listed twice")
        endpoints[endpoint.name] = endpoint
    return endpoints


class EndpointsFile:
    """The endpoints of one file, re-read by `refresh()` when its content changed; the last good list is kept."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._digest: bytes | None = None
        self._endpoints: dict[str, Endpoint] | None = None
        self.loaded_event = asyncio.Event()
        """Set once a valid file was read."""

    @property
    def loaded(self) -> bool:
        """True once a valid file was read (an empty list counts)."""
        return self._endpoints is not None

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The last good endpoints by name ({} before any)."""
        return self._endpoints or {}

    def refresh(self) -> bool:
        """Read the file again; True when a new valid list was taken."""
        if self.path is None:
            return False
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            if self._digest != b"unreadable":
                logger.error("cannot read the webhooks file %s: %s (keeping the last good endpoints)", self.path, exc)
                self._digest = b"unreadable"
            return False
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return False
        self._digest = digest
        try:
            endpoints = parse_endpoints(data)
        except EndpointsError as exc:
            logger.error("the webhooks file %s is invalid, keeping the last good endpoints: %s", self.path, exc)
            return False
        self._endpoints = endpoints
        self.loaded_event.set()
        logger.info("webhook endpoints loaded from %s: %s", self.path, ", ".join(sorted(endpoints)) or "(none)")
        return True
