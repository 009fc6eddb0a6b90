"""The chart README is generated from values.yaml and kept fresh."""

import subprocess
import sys
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from tests.chart.render import CHART

REPO = Path(__file__).resolve().parents[2]


def test_chart_readme_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart_docs.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_component_key_is_documented() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in ("smtpIngress", "queueManager", "dnsResolver", "deliveryWorker"):
        for key in values[component]:
            if key in ("pdb", "autoscaling", "networkPolicy", "service", "proxyProtocol", "api"):
                continue  # documented per sub-key
            assert f"`{component}.{key}`" in readme, f"{component}.{key} has no `# --` comment"
