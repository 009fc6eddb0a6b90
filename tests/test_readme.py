"""The README opens with the two commands and documents every configuration variable."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_starts_with_the_two_commands() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    assert lines[0] == "# kubemta"
    assert lines[1] == "```sh"
    assert lines[2].startswith("make run ") and lines[3].startswith("make test ")


def test_configuration_table_is_current() -> None:
    table = subprocess.run(
        [sys.executable, str(ROOT / "scripts/config_table.py")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert table in (ROOT / "README.md").read_text(), "README config table is stale: rerun scripts/config_table.py"
