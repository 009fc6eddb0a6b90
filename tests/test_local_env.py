"""`make run`'s environment file (scripts/local_env.py): tokens the tracker accepts, written once."""

import stat
import subprocess
import sys
from pathlib import Path

from kubemta_common.settings import ServiceSettings
from kubemta_ingress.api_keys import build_api_key_verifier
from kubemta_ingress.settings import IngressSettings
from kubemta_tracker.settings import TrackerSettings
from kubemta_webhooks.endpoints import parse_endpoints
from kubemta_webhooks.settings import WebhooksSettings

SCRIPT = Path(__file__).parent.parent / "scripts" / "local_env.py"


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_the_file_is_written_once_with_tokens_the_tracker_and_the_services_accept(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / ".run" / "local.env"
    first = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    assert "wrote" in first.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tokens: not world-readable
    env = read_env(path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    tracker = TrackerSettings.load()
    (admin_name,) = tracker.tracker_admin_tokens
    assert tracker.tracker_admin_tokens[admin_name].get_secret_value() == env["KUBEMTA_ADMIN_TOKEN"]
    (read_name,) = tracker.tracker_read_tokens
    assert tracker.tracker_read_tokens[read_name].get_secret_value() == env["KUBEMTA_TRACKER_TOKEN"]
    service = ServiceSettings.load()
    assert service.tracker_url == "http://127.0.0.1:8025"
    assert tracker.index_path.parent == path.parent.resolve()

    again = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    assert again.stdout == "" and read_env(path) == env  # the admin token stays valid across runs


def test_usage_error_without_a_path() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage" in done.stderr


def test_an_older_file_gets_the_api_keys_and_webhooks_files_and_keeps_its_tokens(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / ".run" / "local.env"
    path.parent.mkdir()
    path.write_text("KUBEMTA_ADMIN_TOKEN=kept-admin\nKUBEMTA_TRACKER_TOKEN=kept-read\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True, check=True)
    assert "wrote" in done.stdout
    env = read_env(path)
    assert env["KUBEMTA_ADMIN_TOKEN"] == "kept-admin" and env["KUBEMTA_TRACKER_TOKEN"] == "kept-read"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ingress = IngressSettings.load()
    assert ingress.api_keys_file is not None and build_api_key_verifier(ingress) is not None  # an empty, valid file
    webhooks = WebhooksSettings.load()
    assert webhooks.webhooks_file is not None
    assert parse_endpoints(webhooks.webhooks_file.read_bytes()) == {}
