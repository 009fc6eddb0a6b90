"""Recipient maps: the valid recipients of a local domain, one file per domain (`KUBEMTA_RECIPIENT_MAPS`).

The file (e.g. a mounted ConfigMap) lists one recipient per line: a full address
(`alice@example.org`) or a bare local part (`alice`), as in Postfix'
`local_recipient_maps`. Blank lines and lines starting with `#` are ignored; anything
after the first blank on a line is ignored too, so a Postfix map (`alice@example.org
OK`) works as it is; a quoted local part (`"john smith"@example.org`) is one entry.
An address whose domain is not the map's domain is skipped with a warning.

Comparison follows Postfix' table lookups, which are case-insensitive: the domain in
its canonical form (lower case, A-labels), the local part case-folded (Unicode
`casefold`, so `ALICE`, `Alice` and `alice` are one recipient, and so are `STRASSE`
and `straße`); a quoted local part is compared without its quotes. With
`KUBEMTA_RECIPIENT_DELIMITER` set (Postfix' `recipient_delimiter`, e.g. `+`),
`alice+news` is also found as `alice`.

The file is re-read when it changes (its inode, size or modification time: the kubelet
replaces a ConfigMap's files by an atomic symlink swap), checked at most every
`KUBEMTA_RECIPIENT_MAP_CHECK_INTERVAL`. A file that cannot be read at start-up stops
the service; one that breaks later is logged and the last good content kept.
"""

import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from kubemta_ingress.policy import canonical_domain, dequote, split_address

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = 64 * 1024 * 1024  # a bound of our own: more is refused (a ConfigMap holds at most 1 MiB)
type Signature = tuple[int, int, int, int]


def parse_recipient_maps(entries: Iterable[str]) -> dict[str, Path]:
    """`KUBEMTA_RECIPIENT_MAPS` items `domain=/absolute/path` -> {canonical domain: path}; ValueError on a bad one."""
    maps: dict[str, Path] = {}
    for item in entries:
        name, sep, path = item.partition("=")
        domain = canonical_domain(name.strip())
        if not sep or domain is None or not path.strip():
            raise ValueError(f"invalid recipient map {item!r}: expected domain=/path/to/file")
        if not Path(path.strip()).is_absolute():
            raise ValueError(f"invalid recipient map {item!r}: the path must be absolute")
        if domain in maps:
            raise ValueError(f"duplicate recipient map for {domain!r}")
        maps[domain] = Path(path.strip())
    return maps


def normal_local_part(local: str) -> str:
    """A local part as compared: without quotes, case-folded (Postfix' lookups are case-insensitive)."""
    return dequote(local).casefold()


def parse_entries(lines: Iterable[str], domain: str) -> tuple[frozenset[str], list[str]]:
    """The local parts (compared form) listed for `domain`, and the lines skipped (with the reason)."""
    found: set[str] = set()
    skipped: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        local = _first_field(line)
        if "@" in local and not (local.startswith('"') and local.endswith('"')):
            local, entry_domain = split_address(local)
            if canonical_domain(entry_domain) != domain:
                skipped.append(f"line {number}: {entry_domain!r} is not {domain}")
                continue
        if not local:
            skipped.append(f"line {number}: empty local part")
            continue
        found.add(normal_local_part(local))
    return frozenset(found), skipped


def _first_field(line: str) -> str:
    """The entry on a line: up to the first blank, a quoted local part kept whole."""
    if line.startswith('"'):
        end = 1
        while end < len(line) and line[end] != '"':
            end += 2 if line[end] == "\\" else 1
        rest = line[end + 1 :]
        return line[: end + 1] + rest.split(maxsplit=1)[0] if rest[:1] == "@" else line[: end + 1]
    return line.split(maxsplit=1)[0]


class RecipientMap:
    """The recipients of one domain, from a file that is re-read when it changes."""

    def __init__(
        self,
        domain: str,
        path: Path,
        *,
        delimiter: str = "",
        check_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.domain = domain
        self.path = path
        self._delimiter = delimiter
        self._check_interval = check_interval
        self._clock = clock
        self._signature: Signature | None = None
        self._checked = clock()
        self._entries = self._read()  # OSError/ValueError at start-up: the service does not start

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, local: str) -> bool:
        """True when the local part (as sent) is listed, or its base before the recipient delimiter."""
        self._refresh()
        key = normal_local_part(local)
        if key in self._entries:
            return True
        if self._delimiter:
            cut = min((key.find(ch) for ch in self._delimiter if ch in key), default=-1)
            return cut > 0 and key[:cut] in self._entries
        return False

    def _stat(self) -> Signature:
        stat = os.stat(self.path)  # follows the symlinks of a mounted ConfigMap
        return (stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)

    def _read(self) -> frozenset[str]:
        signature = self._stat()
        if signature[2] > MAX_FILE_SIZE:
            raise ValueError(f"{self.path} is larger than {MAX_FILE_SIZE} bytes")
        with open(self.path, encoding="utf-8") as file:
            entries, skipped = parse_entries(file, self.domain)
        for problem in skipped:
            logger.warning("recipient map %s: skipped %s", self.path, problem)
        self._signature = signature
        logger.info(
            "recipient map for %s loaded: %d recipients",
            self.domain,
            len(entries),
            extra={"path": str(self.path)},
        )
        return entries

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self._check_interval:
            return
        self._checked = now
        try:
            if self._stat() == self._signature:
                return
            self._entries = self._read()
        except (OSError, ValueError) as exc:
            logger.error(
                "recipient map %s cannot be read, keeping the last good one: %s",
                self.path,
                exc,
            )
