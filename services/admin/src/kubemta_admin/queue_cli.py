"""`kubemta-admin queue ...`: the mail queue through the tracker's HTTP API, with Postfix's verbs.

    queue summary                      per stage, retry tier and destination domain, with the oldest age (qshape)
    queue list [--domain D] [--sender S] [--state S] [--all]    queued messages (mailq)
    queue show QUEUE_ID                envelope, headers, jobs and timeline of one message (postcat)
    queue find [--queue-id|--message-id|--sender|--recipient] [--since T] [--until T] [--limit N]
    queue flush [--domain D]           deferred mail now (postqueue -f / -s)
    queue hold (--queue-id Q|--sender S|--domain D)              (postsuper -h)
    queue release (--queue-id Q|--sender S|--domain D|--all)     (postsuper -H)
    queue delete (--queue-id Q|--sender S|--domain D) [--dsn]    (postsuper -d)
    queue held                         the held jobs

Every verb takes --url (KUBEMTA_TRACKER_URL, else http://127.0.0.1:8025), --token (KUBEMTA_ADMIN_TOKEN; a read
token does for the read verbs; never printed), --timeout and --json (the tracker's answer as JSON, every
non-ASCII character escaped). Exit status: 0 ok, 1 not found (or `find` matched nothing), 2 usage, 3 tracker
unreachable, failing (5xx) or answering nonsense, 4 token refused, 130 interrupted. Errors are one line on stderr.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubemta_admin import queue_render
from kubemta_admin.text import as_dict, as_list, cell, parse_when, rfc3339
from kubemta_admin.tracker_http import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    TrackerHttp,
    check_target,
    path_segment,
)

PROG = "kubemta-admin queue"
DEFAULT_URL = "http://127.0.0.1:8025"
DEFAULT_TIMEOUT = 10.0
LIST_LIMIT = 1000
MAX_LIMIT = 1000  # the tracker's largest page
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
FINAL_STATES = frozenset({"done", "delivered", "bounced", "expired", "deleted"})


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the tracker's URL (default: KUBEMTA_TRACKER_URL, else {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (default: KUBEMTA_ADMIN_TOKEN); prefer the variable")
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the tracker")
    common.add_argument("--json", action="store_true", help="print the tracker's answer as JSON")
    return common


def _selector(parser: argparse.ArgumentParser, *, with_all: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--queue-id", help="one message")
    group.add_argument("--sender", help="every message from this envelope sender")
    group.add_argument("--domain", help="every job to this destination domain")
    if with_all:
        group.add_argument("--all", action="store_true", help="every held message")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kubemta-admin queue`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Look at and manage the mail queue (tracker API).")
    verbs = parser.add_subparsers(dest="verb", required=True)
    common = common_options()
    verbs.add_parser("summary", parents=[common], help="messages per stage, retry tier and domain, oldest ages")
    listing = verbs.add_parser("list", parents=[common], help="queued messages, like mailq")
    listing.add_argument("--domain", help="only messages with a recipient in this domain")
    listing.add_argument("--sender", help="only messages from this envelope sender")
    listing.add_argument(
        "--state",
        help="only messages with a job in this state (inbound, route, deliver, results, retry[.5m], held, done)",
    )
    listing.add_argument("--all", action="store_true", help="include finished messages")
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help=f"most messages asked for ({LIST_LIMIT})")
    show = verbs.add_parser("show", parents=[common], help="one message: envelope, headers, jobs, timeline")
    show.add_argument("queue_id")
    find = verbs.add_parser("find", parents=[common], help="messages by id, address or time range")
    find.add_argument("--queue-id")
    find.add_argument("--message-id", help="the Message-ID header, with or without <>")
    find.add_argument("--sender")
    find.add_argument("--recipient")
    find.add_argument("--since", help='a time ("2026-12-05 10:00", RFC 3339; UTC) or a duration ago ("2h")')
    find.add_argument("--until", help="as --since")
    find.add_argument("--limit", type=int, default=100, help="most messages (100)")
    flush = verbs.add_parser("flush", parents=[common], help="retry deferred mail now (postqueue -f / -s)")
    flush.add_argument("--domain", help="only jobs to this domain")
    hold = verbs.add_parser("hold", parents=[common], help="hold messages (postsuper -h)")
    _selector(hold, with_all=False)
    release = verbs.add_parser("release", parents=[common], help="release held messages (postsuper -H)")
    _selector(release, with_all=True)
    delete = verbs.add_parser("delete", parents=[common], help="delete messages (postsuper -d)")
    _selector(delete, with_all=False)
    delete.add_argument("--dsn", action="store_true", help="bounce them to the sender (default: no DSN)")
    verbs.add_parser("held", parents=[common], help="the held messages")
    return parser


def _nonempty(args: argparse.Namespace, *names: str) -> dict[str, str]:
    return {name: getattr(args, name) for name in names if getattr(args, name) not in (None, "")}


def _summary(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.get("/v1/queue/summary")
    return answer, queue_render.summary(answer)


def _list(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    _check_limit(args.limit)
    params = {**_nonempty(args, "sender", "domain", "state"), "limit": str(args.limit)}
    if args.state is None and not args.all:
        params["state"] = "open"  # so the limit counts only queued mail
    answer = api.get("/v1/messages", params)
    kept = [entry for entry in as_list(answer.get("messages")) if _listed(as_dict(entry), args)]
    answer = {**answer, "messages": kept}
    return answer, queue_render.messages(answer)


def _listed(entry: dict[str, object], args: argparse.Namespace) -> bool:
    """The sender, domain and open filters again on this side, so a tracker that ignores a parameter does not
    widen the list. (--state is the tracker's alone: it matches a message with any open job in that state, which
    the listing's one state per message cannot tell.)"""
    if args.state is None and not args.all and entry.get("state") in FINAL_STATES:
        return False
    if args.sender is not None and str(entry.get("sender", "")).lower() != args.sender.lower():
        return False
    if args.domain is not None:
        domain = args.domain.lower().rstrip(".")
        recipients = [str(rcpt).lower() for rcpt in as_list(entry.get("recipients"))]
        if not any(rcpt.rpartition("@")[2] == domain for rcpt in recipients):
            return False
    return True


def _show(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.get(f"/v1/messages/{path_segment(args.queue_id, 'queue id')}")
    return answer, queue_render.message(answer)


def _find(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    _check_limit(args.limit)
    params = _nonempty(args, "queue_id", "message_id", "sender", "recipient")
    now = datetime.now(UTC)
    for name in ("since", "until"):
        value = getattr(args, name)
        if value:
            try:
                params[name] = rfc3339(parse_when(value, now))
            except ValueError:
                raise CliError(EXIT_USAGE, f"--{name}: not a time or a duration: {cell(value)}") from None
    if not params:
        raise CliError(EXIT_USAGE, "find needs --queue-id, --message-id, --sender, --recipient, --since or --until")
    params["limit"] = str(args.limit)
    answer = api.get("/v1/messages", params)
    if not as_list(answer.get("messages")):
        raise Answered(answer, ["no messages"], EXIT_NOT_FOUND)
    return answer, queue_render.messages(answer)


class Answered(Exception):
    """A verb's answer that ends with another exit status than 0 (`find` that found nothing: 1)."""

    def __init__(self, answer: dict[str, Any], lines: list[str], status: int) -> None:
        super().__init__(status)
        self.answer = answer
        self.lines = lines
        self.status = status


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise CliError(EXIT_USAGE, f"--limit must be between 1 and {MAX_LIMIT}")


def _selector_body(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "all", False):
        return {"all": True}
    return _nonempty(args, "queue_id", "sender", "domain")


def _flush(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.post("/v1/queue/flush", _nonempty(args, "domain"))
    where = f" to {cell(args.domain)}" if args.domain else ""
    return answer, [f"flushed {cell(answer.get('flushed'))} deferred jobs{where}"]


def _decision(verb: str, counted: str) -> Callable[[TrackerHttp, argparse.Namespace], tuple[dict[str, Any], list[str]]]:
    def run(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
        body = _selector_body(args)
        if verb == "delete":
            body["dsn"] = bool(args.dsn)
        answer = api.post(f"/v1/queue/{verb}", body)
        what = ", ".join(f"{key}={cell(value)}" for key, value in body.items() if key != "dsn")
        line = f"{counted} {cell(answer.get(counted))} (decision {cell(answer.get('decision_id'))}; {what})"
        return answer, [line]

    return run


def _held(api: TrackerHttp, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    answer = api.get("/v1/queue/held")
    return answer, queue_render.held(answer)


Verb = Callable[[TrackerHttp, argparse.Namespace], tuple[dict[str, Any], list[str]]]
"""One verb of a command against the tracker: its JSON answer and the lines that show it."""

VERBS: dict[str, Verb] = {
    "summary": _summary,
    "list": _list,
    "show": _show,
    "find": _find,
    "flush": _flush,
    "hold": _decision("hold", "held"),
    "release": _decision("release", "released"),
    "delete": _decision("delete", "deleted"),
    "held": _held,
}


def write_answer(answer: dict[str, Any], lines: list[str], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=True) + "\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")


def main(argv: Sequence[str]) -> int:
    """`argv` starts with "queue"; the exit status."""
    return run_verb(PROG, build_parser().parse_args(list(argv[1:])), VERBS)  # usage errors exit with 2


def run_verb(prog: str, args: argparse.Namespace, verbs: Mapping[str, Verb]) -> int:
    """Run `args.verb` of `verbs` against the tracker (--url or KUBEMTA_TRACKER_URL, --token or
    KUBEMTA_ADMIN_TOKEN): the answer on stdout (--json, or its lines), a failure in one line on stderr; the exit
    status. Shared by `kubemta-admin queue` and `kubemta-admin suppression`."""
    url = args.url or os.environ.get("KUBEMTA_TRACKER_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("KUBEMTA_ADMIN_TOKEN", "")
    try:
        target = check_target(url, token, args.timeout)
        with TrackerHttp(target) as api:
            answer, lines = verbs[args.verb](api, args)
        status = EXIT_OK
    except Answered as answered:
        answer, lines, status = answered.answer, answered.lines, answered.status
    except CliError as error:
        sys.stderr.write(f"{prog} {args.verb}: {error.message}\n")
        return error.status
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog} {args.verb}: interrupted\n")
        return EXIT_INTERRUPTED
    try:
        write_answer(answer, lines, args.json)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        silence_stdout()
    return status


def silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture)
        pass
    finally:
        os.close(devnull)
