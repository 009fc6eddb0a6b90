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
import sys
from collections.abc import Callable, Sequence

from kubemta_admin import queue_cli, suppression_cli
from kubemta_ingress import api_keys_cli, domains_cli
from kubemta_ingress import cli as users_cli
from kubemta_queue_manager import dkim_cli

PROG = "kubemta-admin"
COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "users": (users_cli.main, "manage the SMTP AUTH users file (KUBEMTA_USERS_FILE)"),
    "api-keys": (api_keys_cli.main, "create, list, show, rotate and remove HTTP API keys (KUBEMTA_API_KEYS_FILE)"),
    "domains": (domains_cli.main, "check the DNS records (DKIM, SPF, DMARC, MX, PTR) of sending domains"),
    "dkim": (dkim_cli.main, "generate DKIM signing keys and print their DNS records"),
    "queue": (queue_cli.main, "summary, list, show, find, flush, hold, release and delete queued mail (tracker API)"),
    "suppression": (suppression_cli.main, "list, show, add and remove suppressed recipients (tracker API)"),
}


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
        command, _ = COMMANDS[argv[0]]
        return command(list(argv))
    parser = build_parser()
    parser.parse_args(argv)  # --help, or a usage error: exits (0 or 2)
    parser.error("the subcommand comes first")  # not reached: the parser exits without a known subcommand


def main() -> None:
    """Console script `kubemta-admin`."""
    raise SystemExit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
