"""What the figures were measured on: CPUs, memory, kernel and the versions of the software compared."""

import os
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from bench import postfix, rabbitmq
from bench.kubemta_stack import BIN


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _safe(read: Any) -> str:
    try:
        return str(read())
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError):
        return "unknown"


def python_build() -> str:
    """How this interpreter was compiled: "PGO+LTO" when with profile-guided and link-time optimisation (as the
    official `python` images are), else what of it is missing (pyenv's default build has neither)."""
    arguments = str(sysconfig.get_config_var("CONFIG_ARGS") or "")
    flags = (("--enable-optimizations", "PGO"), ("--with-lto", "LTO"))
    optimisations = [name for flag, name in flags if flag in arguments]
    return "+".join(optimisations) if optimisations else "no PGO, no LTO"


def python_text(machine: dict[str, Any]) -> str:
    """ "Python 3.13.5 (PGO+LTO build)" for a `describe()` result; a result file from before the build was recorded
    gives the version alone."""
    build = machine.get("python_build")
    return f"Python {machine['python']}" + (f" ({build} build)" if build else "")


def describe() -> dict[str, Any]:
    kubemta = subprocess.run(
        [str(BIN / "kubemta-ingress"), "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_build": python_build(),
        "kubemta": kubemta or "unknown",
        "postfix": _safe(postfix.version),
        "rabbitmq": _safe(rabbitmq.version),
        "load_average_at_start": list(os.getloadavg()),
    }
