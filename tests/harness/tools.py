"""The outside programs the tests drive (swaks, promtool, prometheus, uv).

A test that needs one fails when it is missing, saying how to get it: `make test` and
`make test-unit` install them (scripts/system-deps.sh, `make sync`). A skip would let a
run without the tool look green.
"""

import shutil
from pathlib import Path

import pytest


def required_tool(name: str, how_to_install: str, *candidates: Path) -> str:
    """The first existing candidate path, else `name` found on PATH; when neither, the test fails."""
    found = next((str(path) for path in candidates if path.exists()), None) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: {how_to_install}", pytrace=False)
    return found


def swaks() -> str:
    return required_tool("swaks", "`make test` installs it (Debian swaks, scripts/system-deps.sh)")


def promtool() -> str:
    return required_tool(
        "promtool", "`make test` installs it (Debian prometheus, scripts/system-deps.sh)", Path("/usr/bin/promtool")
    )


def prometheus() -> str:
    return required_tool(
        "prometheus", "`make test` installs it (Debian prometheus, scripts/system-deps.sh)", Path("/usr/bin/prometheus")
    )
