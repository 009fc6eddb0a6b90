"""Entry point of `kubemta-admin`: the administration commands, one subcommand each, run by the module
that owns them (the services never take them on their own command line).

    kubemta-admin users ...     the SMTP AUTH users file (kubemta_ingress.cli)
    kubemta-admin api-keys ...  API keys of the HTTP API (kubemta_ingress.api_keys_cli)
    kubemta-admin domains ...   the DNS records of sending domains (kubemta_ingress.domains_cli)
    kubemta-admin dkim ...      DKIM signing keys (kubemta_queue_manager.dkim_cli)
    kubemta-admin queue ...     the mail queue through the tracker's API (kubemta_admin.queue_cli)
    kubemta-admin suppression ...  the suppression list through the tracker's API (kubemta_admin.suppression_cli)

Each command's `main(argv)` gets the arguments from its subcommand's name on and returns the exit
status; an unknown or missing subcommand is a usage error (exit status 2).
"""

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

PROG = "kubemta-admin"
COMMANDS: dict[str, tuple[str, str]] = {
    "users": ("kubemta_ingress.cli", "manage the SMTP AUTH users file (KUBEMTA_USERS_FILE)"),
    "api-keys": (
        "kubemta_ingress.api_keys_cli",
        "create, list, show, rotate and remove HTTP API keys (KUBEMTA_API_KEYS_FILE)",
    ),
    "domains": ("kubemta_ingress.domains_cli", "check the DNS records (DKIM, SPF, DMARC, MX, PTR) of sending domains"),
    "dkim": ("kubemta_queue_manager.dkim_cli", "generate DKIM signing keys and print their DNS records"),
    "queue": (
        "kubemta_admin.queue_cli",
        "summary, list, show, find, flush, hold, release and delete queued mail (tracker API)",
    ),
    "suppression": ("kubemta_admin.suppression_cli", "list, show, add and remove suppressed recipients (tracker API)"),
}
"""Each subcommand's module (imported only when that subcommand runs: importing all of them, the ingress' HTTP
API and settings among them, cost every run about half a second of CPU) and its help line."""


def command_main(name: str) -> Callable[[Sequence[str]], int]:
    """The `main(argv)` of subcommand `name`."""
    module, _ = COMMANDS[name]
    return cast(Callable[[Sequence[str]], int], importlib.import_module(module).main)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: it names the subcommands; each command parses its own arguments."""
    parser = argparse.ArgumentParser(prog=PROG, description="kubemta administration commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def run(argv: Sequence[str]) -> int:
    """Run `kubemta-admin` with `argv` (without the program name); the exit status."""
    if argv and argv[0] in COMMANDS:
        return command_main(argv[0])(list(argv))
    parser = build_parser()
    parser.parse_args(argv)  # --help, or a usage error: exits (0 or 2)
    parser.error("the subcommand comes first")  # not reached: the parser exits without a known subcommand


def main() -> None:
    """Console script `kubemta-admin`."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
