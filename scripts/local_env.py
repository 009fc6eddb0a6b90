"""Write the environment `make run` starts the services with (a honcho env file), once.

The tracker answers only callers with a token, so a local run needs tokens too: this script
makes random ones the first time (kept in the file, so the admin token stays valid across runs)
and points every service at the local tracker for its duplicate checks. The file is for this
machine only (the services listen on 127.0.0.1); it is gitignored, and `KUBEMTA_ADMIN_TOKEN`
in it is what `kubemta-admin queue` reads:

    set -a; . .run/local.env; set +a
    .venv/bin/kubemta-admin queue summary

The sending API's API keys (`KUBEMTA_API_KEYS_FILE`) and the webhook endpoints
(`KUBEMTA_WEBHOOKS_FILE`) are files next to it, made empty the first time; the services re-read
them when they change, so `kubemta-admin api-keys create ... --file .run/api-keys` works while
`make run` runs. A file written by an earlier version gets the variables it lacks; values it has
are kept.
"""

import secrets
import sys
from pathlib import Path

TRACKER = "127.0.0.1:8025"


API_KEYS_HEADER = (
    "# kubemta API keys: .venv/bin/kubemta-admin api-keys create NAME --identity DOMAIN --file .run/api-keys\n"
)
NO_WEBHOOKS = "[]\n"


def local_environment(read_token: str, admin_token: str, run_dir: Path) -> dict[str, str]:
    """The variables of a local run with these tokens, its files under `run_dir`."""
    return {
        "KUBEMTA_TRACKER_URL": f"http://{TRACKER}",
        "KUBEMTA_TRACKER_TOKEN": read_token,
        "KUBEMTA_TRACKER_READ_TOKENS": f"local-services:{read_token}",
        "KUBEMTA_TRACKER_ADMIN_TOKENS": f"local-admin:{admin_token}",
        "KUBEMTA_ADMIN_TOKEN": admin_token,
        "KUBEMTA_INDEX_PATH": str(run_dir / "tracker-index.sqlite3"),
        "KUBEMTA_API_KEYS_FILE": str(run_dir / "api-keys"),
        "KUBEMTA_WEBHOOKS_FILE": str(run_dir / "webhooks.json"),
    }


def read_env(path: Path) -> dict[str, str]:
    """The variables of an env file (`NAME=value` lines)."""
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def write_once(path: Path) -> bool:
    """Write `path` with the variables it lacks (all of them when it is missing), and the API keys and
    webhooks files when they are missing; True when anything was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_dir = path.parent.resolve()
    existing = read_env(path)
    variables = local_environment(secrets.token_urlsafe(24), secrets.token_urlsafe(24), run_dir)
    if existing:  # tokens already given out stay valid
        variables = {**variables, **existing}
    wrote = False
    if variables != existing:
        path.touch(mode=0o600)
        path.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
        wrote = True
    for file, content in ((run_dir / "api-keys", API_KEYS_HEADER), (run_dir / "webhooks.json", NO_WEBHOOKS)):
        if not file.exists():
            file.touch(mode=0o600)
            file.write_text(content)
            wrote = True
    return wrote


def main(argv: list[str]) -> int:
    """`local_env.py PATH`: write the env file when it is missing."""
    if len(argv) != 1:
        print("usage: local_env.py PATH", file=sys.stderr)  # noqa: T201
        return 2
    if write_once(Path(argv[0])):
        print(f"wrote {argv[0]} (tracker tokens for this machine, the API keys and webhooks files)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
