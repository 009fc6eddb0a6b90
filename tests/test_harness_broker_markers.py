"""A test that uses a broker fixture must say so with the `broker` (or `e2e`) marker: `make test-unit` and
`make mutate` select `not broker and not e2e`, and an unmarked one then ran there without a broker (it broke
`make mutate` for kubemta_common). The broker fixtures' plugin refuses such a test at collection."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def collect(tmp_path: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(test_source)
    command = [sys.executable, "-m", "pytest", "-p", "tests.harness.broker_fixtures", "-p", "no:cacheprovider"]
    command += ["--collect-only", "-q", "test_sample.py"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(
    "test_source",
    [
        "def test_direct(vhost):\n    pass\n",
        "import pytest\n\n@pytest.fixture\ndef wrapped(broker_node):\n    return broker_node\n\n"
        "def test_through_a_fixture(wrapped):\n    pass\n",
    ],
)
def test_a_test_using_a_broker_fixture_without_the_marker_is_refused(tmp_path: Path, test_source: str) -> None:
    result = collect(tmp_path, test_source)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "without the broker or e2e marker" in result.stderr and "test_sample.py::test_" in result.stderr


@pytest.mark.parametrize(
    "test_source",
    [
        "import pytest\n\n@pytest.mark.broker\ndef test_marked(vhost):\n    pass\n",
        "import pytest\n\npytestmark = pytest.mark.e2e\n\ndef test_module_marked(broker):\n    pass\n",
        "def test_without_a_broker(tmp_path):\n    pass\n",
    ],
)
def test_a_marked_test_or_one_without_a_broker_is_collected(tmp_path: Path, test_source: str) -> None:
    result = collect(tmp_path, test_source)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
