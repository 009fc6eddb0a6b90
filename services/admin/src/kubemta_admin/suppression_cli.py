"""`kubemta-admin suppression ...`: the cluster-wide suppression list through the tracker's HTTP API.

    suppression list [--domain D] [--limit N]          live entries in address order
    suppression show ADDRESS                           one entry: source, reason, since, expires, the bounce
    suppression add ADDRESS [--reason TEXT] [--ttl 30d]  suppress (an operator's entry; TTL at most
                                                       KUBEMTA_SUPPRESSION_TTL, its default)
    suppression remove ADDRESS                         lift an entry (a bounce's or an operator's)

The options, exit statuses and escaping are `queue`'s (queue_cli.py): --url (KUBEMTA_TRACKER_URL), --token
(KUBEMTA_ADMIN_TOKEN; a read token does for list and show), --timeout, --json; 0 ok, 1 not found (show or remove
of an address that is not suppressed), 2 usage (a bad address, reason or TTL the tracker refused), 3 tracker
unreachable or failing, 4 token refused, 130 interrupted. `add` and `remove` answer once the tracker stored the
change on the `suppressions` stream and its own index shows it (docs/suppression.md).
"""

import argparse
from collections.abc import Sequence
from typing import Any

from kubemta_admin.queue_cli import Verb, common_options, run_verb
from kubemta_admin.text import as_dict, as_list, cell, human_time, printable, table
from kubemta_admin.tracker_http import EXIT_USAGE, CliError, TrackerHttp, path_segment
from kubemta_common.config_types import parse_duration

PROG = "kubemta-admin suppression"
PAGE = 1000
"""The tracker's largest page."""
LIST_LIMIT = 1000


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kubemta-admin suppression`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Look at and change the suppression list (tracker API).")
    verbs = parser.add_subparsers(dest="verb", required=True)
    common = common_options()
    listing = verbs.add_parser("list", parents=[common], help="suppressed addresses in address order")
    listing.add_argument("--domain", help="only addresses in this domain")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"most entries ({LIST_LIMIT})")
    show = verbs.add_parser("show", parents=[common], help="one suppressed address")
    show.add_argument("address")
    add = verbs.add_parser("add", parents=[common], help="suppress an address")
    add.add_argument("address")
    add.add_argument("--reason", default="", help="why (shown to senders in the 550 reply; at most 200 characters)")
    add.add_argument("--ttl", help="how long, e.g. 7d (default and most: the tracker's KUBEMTA_SUPPRESSION_TTL)")
    remove = verbs.add_parser("remove", parents=[common], help="lift the suppression of an address")
    remove.add_argument("address")
    return parser


def _entry_row(entry: dict[str, object]) -> list[str]:
    return [
        cell(entry.get("address")),
        cell(entry.get("source")),
        human_time(entry.get("since")),
        human_time(entry.get("expires")),
        cell(entry.get("reason")),
    ]


def _list(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    if args.limit < 1:
        raise CliError(EXIT_USAGE, "--limit must be at least 1")
    entries: list[object] = []
    after: str | None = None
    while len(entries) < args.limit:
        params = {"limit": str(min(PAGE, args.limit - len(entries)))}
        if args.domain:
            params["domain"] = args.domain
        if after:
            params["after"] = after
        page = api.get("/v1/suppressions", params)
        entries += as_list(page.get("suppressions"))
        following = page.get("next")
        if not isinstance(following, str) or not following or following == after:
            break
        after = following
    entries = entries[: args.limit]
    answer = {"suppressions": entries}
    if not entries:
        return answer, ["no suppressed addresses"]
    rows = [_entry_row(as_dict(entry)) for entry in entries]
    return answer, table(["ADDRESS", "SOURCE", "SINCE", "EXPIRES", "REASON"], rows)


def _details(entry: dict[str, object]) -> list[str]:
    lines = [
        f"address:    {cell(entry.get('address'))}",
        f"source:     {cell(entry.get('source'))} (by {cell(entry.get('actor'))})",
        f"reason:     {cell(entry.get('reason'))}",
        f"since:      {human_time(entry.get('since'))}",
        f"expires:    {human_time(entry.get('expires'))}",
    ]
    if entry.get("queue_id"):
        lines.append(f"queue id:   {cell(entry.get('queue_id'))}")
    if entry.get("diagnostic"):
        lines.append(f"diagnostic: {cell(entry.get('diagnostic'))}")
    return lines


def _show(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.get(f"/v1/suppressions/{path_segment(args.address, 'address')}")
    return answer, _details(answer)


def _add(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    body: dict[str, Any] = {"address": args.address, "reason": args.reason}
    if args.ttl is not None:
        try:
            body["ttl"] = parse_duration(args.ttl)
        except ValueError:
            shown = printable(args.ttl)
            raise CliError(EXIT_USAGE, f"--ttl must be a duration such as 7d or 12h, not {shown}") from None
        if body["ttl"] <= 0:
            raise CliError(EXIT_USAGE, "--ttl must be more than 0")
    answer = api.post("/v1/suppressions", body)
    return answer, [f"suppressed {cell(answer.get('address'))} until {human_time(answer.get('expires'))}"]


def _remove(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.delete(f"/v1/suppressions/{path_segment(args.address, 'address')}")
    return answer, [f"removed {cell(answer.get('address'))}"]


VERBS: dict[str, Verb] = {
    "list": _list,
    "show": _show,
    "add": _add,
    "remove": _remove,
}


def main(argv: Sequence[str]) -> int:
    """`argv` starts with "suppression"; the exit status."""
    return run_verb(PROG, build_parser().parse_args(list(argv[1:])), VERBS)  # usage errors exit with 2
