"""The Dockerfile's install steps without Docker: the build context the .dockerignore lets through,
the locked, non-editable install of the workspace into a fresh virtual environment, and every
console script of the image starting from it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.tools import required_tool

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = (
    "kubemta-ingress",
    "kubemta-queue-manager",
    "kubemta-dns-resolver",
    "kubemta-delivery-worker",
    "kubemta-tracker",  # the chart's tracker Deployment runs it
)
ADMIN_SCRIPT = "kubemta-admin"
SYNC = "uv sync --frozen --no-dev --all-packages --no-editable"
UV = REPO / ".tools" / "bin" / "uv"

pytestmark = pytest.mark.timeout(600)


def uv() -> str:
    return required_tool("uv", "`make sync` installs it (.tools/bin/uv)", UV)


def build_context(destination: Path) -> Path:
    """What `docker build .` sends with our .dockerignore: pyproject.toml, uv.lock, services/ without tests."""
    destination.mkdir()
    shutil.copy2(REPO / "pyproject.toml", destination)
    shutil.copy2(REPO / "uv.lock", destination)
    shutil.copytree(
        REPO / "services",
        destination / "services",
        ignore=shutil.ignore_patterns("tests", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache"),
    )
    return destination


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = build_context(tmp_path_factory.mktemp("image") / "src")
    venv = context.parent / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_COMPILE_BYTECODE": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    for arguments in (["--no-install-workspace"], []):  # the two RUN steps of the builder stage
        result = subprocess.run(
            [uv(), *SYNC.split()[1:], *arguments, "--python", sys.executable],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return venv


def test_dockerfile_runs_the_steps_this_test_runs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count(SYNC) == 1  # the workspace itself
    assert dockerfile.count("uv sync --frozen --no-dev --no-install-workspace --all-packages --no-editable") == 1
    for member in sorted((REPO / "services").glob("*/pyproject.toml")):
        assert f"COPY {member.relative_to(REPO)} {member.parent.relative_to(REPO)}/" in dockerfile
    assert "USER 10001:10001" in dockerfile
    instructions = [line.split()[0] for line in dockerfile.splitlines() if line and not line.startswith(("#", " "))]
    assert "CMD" not in instructions and "ENTRYPOINT" not in instructions  # no default service
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored[:4] == ["*", "!pyproject.toml", "!uv.lock", "!services/"]
    assert "services/**/tests/" in ignored


def test_the_workspace_is_installed_as_packages_not_links(image_venv: Path) -> None:
    python = image_venv / "bin" / "python"
    code = (
        "import kubemta_common, kubemta_mail_auth, kubemta_ingress, kubemta_queue_manager, kubemta_dns_resolver,"
        " kubemta_delivery_worker, kubemta_admin, kubemta.v1; print('\\n'.join(m.__file__ for m in (kubemta_common,"
        " kubemta_mail_auth, kubemta_ingress, kubemta_queue_manager, kubemta_dns_resolver, kubemta_delivery_worker,"
        " kubemta_admin)))"
    )
    result = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for path in result.stdout.split():
        assert Path(path).is_relative_to(image_venv), path
    dev = subprocess.run([str(python), "-I", "-c", "import pytest"], capture_output=True, text=True, timeout=60)
    assert dev.returncode != 0, "dev tools must not be in the image"


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_starts(image_venv: Path, script: str) -> None:
    """Each service starts from the image's environment: it loads its code and settings, and a bad
    setting stops it with exit code 2 and a message naming the variable (it never reaches the broker)."""
    executable = image_venv / "bin" / script
    assert executable.exists()
    env = {"PATH": str(image_venv / "bin"), "KUBEMTA_LOG_FORMAT": "bogus"}
    result = subprocess.run([str(executable)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "kubemta: invalid configuration: KUBEMTA_LOG_FORMAT" in result.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_answers_help(image_venv: Path, script: str) -> None:
    """`--help` describes the service and lists its KUBEMTA_* variables, without starting anything."""
    executable = image_venv / "bin" / script
    result = subprocess.run(
        [str(executable), "--help"], env={"PATH": str(image_venv / "bin")}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert "KUBEMTA_AMQP_URL" in result.stdout and "KUBEMTA_RETRY_SCHEDULE" in result.stdout


def test_the_admin_script_runs_its_commands(image_venv: Path, tmp_path: Path) -> None:
    """`kubemta-admin` lists its commands and runs one (`dkim generate`) from the image's environment."""
    executable = image_venv / "bin" / ADMIN_SCRIPT
    env = {"PATH": str(image_venv / "bin")}
    result = subprocess.run([str(executable), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: {ADMIN_SCRIPT} [-h] {{users,api-keys,domains,dkim,queue,suppression}}")
    argv = ["dkim", "generate", "--domain", "example.com", "--selector", "s1", "--keys-dir", str(tmp_path)]
    generated = subprocess.run([str(executable), *argv], env=env, capture_output=True, text=True, timeout=60)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert generated.stdout.startswith("s1._domainkey.example.com. IN TXT (")
    assert (tmp_path / "example.com" / "s1.key").exists() and (tmp_path / "example.com" / "s1.pub").exists()
