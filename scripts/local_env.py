"""Write the environment `make run` starts the services with (a honcho env file), once.

The tracker answers only callers with a token, so a local run needs tokens too: this script
makes random ones the first time (kept in the file, so the admin token stays valid across runs)
and points every service at the local tracker for its duplicate checks. The file is for this
machine only (the services listen on 127.0.0.1); it is gitignored, and `KUBEMTA_ADMIN_TOKEN`
in it is what `kubemta-admin queue` reads:

    set -a; . .run/local.env; set +a
    .venv/bin/kubemta-admin queue summary
"""

import secrets
import sys
from pathlib import Path

TRACKER = "127.0.0.1:8025"


def local_environment(read_token: str, admin_token: str, run_dir: Path) -> dict[str, str]:
    """The variables of a local run with these tokens, its files under `run_dir`."""
    return {
        "KUBEMTA_TRACKER_URL": f"http://{TRACKER}",
        "KUBEMTA_TRACKER_TOKEN": read_token,
        "KUBEMTA_TRACKER_READ_TOKENS": f"local-services:{read_token}",
        "KUBEMTA_TRACKER_ADMIN_TOKENS": f"local-admin:{admin_token}",
        "KUBEMTA_ADMIN_TOKEN": admin_token,
        "KUBEMTA_INDEX_PATH": str(run_dir / "tracker-index.sqlite3"),
    }


def write_once(path: Path) -> bool:
    """Write `path` unless it exists; True when it was written."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    variables = local_environment(secrets.token_urlsafe(24), secrets.token_urlsafe(24), path.parent.resolve())
    path.touch(mode=0o600)
    path.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    return True


def main(argv: list[str]) -> int:
    """`local_env.py PATH`: write the env file when it is missing."""
    if len(argv) != 1:
        print("usage: local_env.py PATH", file=sys.stderr)  # noqa: T201
        return 2
    if write_once(Path(argv[0])):
        print(f"wrote {argv[0]} (tracker tokens for this machine)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
