"""A configuration file the ingress re-reads when it changes, and keeps at its last good version when it breaks.

The users file, the API keys file and the ServiceAccount identities file are mounted from a
Secret or ConfigMap and change under a running pod (Kubernetes swaps the mounted file in
place). `WatchedFile` looks at the file's modification time, size and inode at most every
`check_interval` seconds and parses it again when they changed. A version that does not parse
(or a file that vanished) is reported once and the previous one stays in use; a file that
cannot be read at start is a ConfigError naming the setting, so the service does not start.
Errors never quote the file's content (the parsers name lines, never hashes).
"""

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from kubemta_common.errors import ConfigError

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0
"""Seconds between looks at the file's modification time."""

type Stamp = tuple[int, int, int]


class WatchedFile[T]:
    """The parsed content of the file at `path` (`value`), re-read when the file changes.

    `read(path)` parses the file and raises OSError or one of `errors` for a file it cannot use;
    `describe` says what one version holds, for the log (`"3 users"`); `setting` and `what` name
    the file in errors and log lines.
    """

    def __init__(
        self,
        path: Path,
        read: Callable[[Path], T],
        *,
        setting: str,
        what: str,
        describe: Callable[[T], str],
        errors: tuple[type[Exception], ...],
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._read = read
        self._what = what
        self._describe = describe
        self._errors: tuple[type[Exception], ...] = (OSError, *errors)
        self._check_interval = check_interval
        self._clock = clock
        try:
            self._stamp: Stamp | None = self._file_stamp()
            self._value = read(path)
        except self._errors as exc:
            raise ConfigError(f"{setting} {path}: {exc}") from None
        self._checked = clock()
        logger.info("%s %s: %s", what, path, describe(self._value))

    @property
    def value(self) -> T:
        """The current version (the file is checked for changes first)."""
        self._maybe_reload()
        return self._value

    def _file_stamp(self) -> Stamp:
        stat = os.stat(self.path)
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked < self._check_interval:
            return
        self._checked = now
        error: Exception | None = None
        try:
            stamp: Stamp | None = self._file_stamp()
        except OSError as exc:
            stamp, error = None, exc
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a broken version is reported once, not on every look
        if error is None:
            try:
                value = self._read(self.path)
            except self._errors as exc:
                error = exc
            else:
                self._value = value
                logger.info("%s %s reloaded: %s", self._what, self.path, self._describe(value))
                return
        logger.error("%s %s unusable, keeping the previous version: %s", self._what, self.path, error)
