"""Child processes the benchmark starts and stops, always by PID (their own process group)."""

import os
import signal
import subprocess
from pathlib import Path


def spawn(argv: list[str], *, env: dict[str, str] | None = None, log_path: Path) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session (its own process group), stdout and stderr to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], *, grace: float = 15.0) -> int | None:
    """SIGTERM the process group of `proc`, wait up to `grace` seconds, then SIGKILL it; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
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
