"""Child processes the harness (and the benchmark, bench/) starts, and stops by PID, always."""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


def spawn(
    argv: list[str], *, env: dict[str, str] | None = None, log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group with stdout+stderr to `log_path`."""
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 15.0) -> int | None:
    """Send `sig` to the process group, wait up to `grace` seconds, then SIGKILL it. Returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None
    return proc.returncode


def run(argv: list[str], *, timeout: float = 120.0, env: dict[str, str] | None = None) -> str:
    """Run a short command to completion (bounded); its stdout, or RuntimeError with its output."""
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}".strip())
    return result.stdout


def log_tail(path: Path, limit: int = 3000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    """Poll `predicate` until it is true; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class ManagedServer:
    """A server process the harness starts and stops; usable as a context manager."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
