"""`kubemta-admin domains check DOMAIN [--json]`: the domain check on the command line.

Reads the ingress' settings from the environment (KUBEMTA_HOSTNAME, KUBEMTA_SENDING_IPS,
KUBEMTA_DKIM_KEYS_DIR, KUBEMTA_DNS_NAMESERVERS, KUBEMTA_DNS_TIMEOUT), looks the domain's
records up and prints one line per check (status, name, detail) followed, for each check
that is not ok, by the records found and the record to publish; `--json` prints the
report as the HTTP API returns it. Exit status: 0 when every check is ok, 1 when one is
missing, wrong or unknown, 2 for a usage error (bad arguments, invalid domain name,
invalid configuration).
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence

from kubemta_common.errors import ConfigError
from kubemta_ingress.domain_check_config import check_config, check_resolver
from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.domain_check import DomainReport, InvalidDomainError, Status, check_domain

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kubemta-admin domains`."""
    parser = argparse.ArgumentParser(
        prog="kubemta-admin domains", description="Check the DNS records of sending domains."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="look up DKIM, SPF, DMARC, MX, host name and PTR records; exit 0 when all are ok, 1 otherwise",
    )
    check.add_argument("domain", help="the sending domain, e.g. example.com")
    check.add_argument("--json", action="store_true", help="print the report as JSON (as the HTTP API does)")
    return parser


def render_table(report: DomainReport) -> str:
    """The report as text: a headline, then one line per check, with found and expected records under problems."""
    problems = [check for check in report.checks if check.status is not Status.OK]
    headline = f"{report.domain}: all {len(report.checks)} checks ok"
    if problems:
        headline = f"{report.domain}: {len(problems)} of {len(report.checks)} checks need attention"
    width = max([len("CHECK"), *(len(check.name) for check in report.checks)])
    lines = [headline, "", f"{'STATUS':<8} {'CHECK':<{width}} DETAIL"]
    indent = " " * (8 + 1 + width + 1)
    for check in report.checks:
        lines.append(f"{check.status.value:<8} {check.name:<{width}} {check.detail}")
        if check.status is Status.OK:
            continue
        lines.extend(f"{indent}found:   {record}" for record in check.found)
        if check.expected:
            lines.extend(f"{indent}publish: {line}" for line in check.expected.splitlines())
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`argv` starts with "domains"; the exit status."""
    args = build_parser().parse_args(list(argv[1:]))  # usage errors exit with 2
    try:
        settings = IngressSettings.load()
    except ConfigError as exc:
        sys.stderr.write(f"kubemta-admin domains: {exc}\n")
        return EXIT_USAGE
    try:
        report = asyncio.run(check_domain(args.domain, check_config(settings), check_resolver(settings)))
    except InvalidDomainError as exc:
        sys.stderr.write(f"kubemta-admin domains: invalid domain name: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(report.model_dump_json(indent=2) + "\n" if args.json else render_table(report))
    return EXIT_OK if report.ok else EXIT_PROBLEMS
