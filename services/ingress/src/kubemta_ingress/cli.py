"""`kubemta-admin users ...`: manage the users file (users.py) from the command line.

    kubemta-admin users add USER --identity app@example.com --identity example.org [--file PATH]
    kubemta-admin users remove USER
    kubemta-admin users list
    kubemta-admin users verify USER            (exit 0 when the password matches, 1 otherwise)

The file defaults to `$KUBEMTA_USERS_FILE`. Passwords are read from standard input
(first line) with `--password-stdin` or when standard input is not a terminal,
else prompted for without echo. `add` replaces an existing user's entry; comments
and other lines are kept. The file is written atomically with mode 0600. Hashes
and passwords are never printed.
"""

import argparse
import getpass
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kubemta_ingress.users import (
    Identity,
    User,
    UsersFileError,
    hash_password,
    parse_line,
    parse_users,
    valid_username,
    verify_password,
)

USERS_FILE_ENV = "KUBEMTA_USERS_FILE"
EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def out(text: str) -> None:
    """A line of the command's answer on standard output."""
    sys.stdout.write(f"{text}\n")


def err(text: str) -> None:
    """A line on standard error."""
    sys.stderr.write(f"{text}\n")


class CliError(Exception):
    """A user-facing error: printed to stderr, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kubemta-admin users`."""
    parser = argparse.ArgumentParser(prog="kubemta-admin", description="kubemta administration")
    commands = parser.add_subparsers(dest="command", required=True)
    users = commands.add_parser("users", help="manage the SMTP AUTH users file")
    actions = users.add_subparsers(dest="action", required=True)

    def with_file(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--file", type=Path, help=f"users file (default: ${USERS_FILE_ENV})")
        return sub

    add = with_file(actions.add_parser("add", help="add a user, or replace its password and identities"))
    add.add_argument("user")
    add.add_argument(
        "--identity",
        action="append",
        required=True,
        help="sender address (app@example.com) or domain (example.com, @example.com); repeatable",
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    remove = with_file(actions.add_parser("remove", help="remove a user"))
    remove.add_argument("user")
    with_file(actions.add_parser("list", help="list users and their identities"))
    verify = with_file(actions.add_parser("verify", help="check a user's password (exit 0 when it matches)"))
    verify.add_argument("user")
    verify.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def users_path(arg: Path | None) -> Path:
    """The users file named by `--file` or `$KUBEMTA_USERS_FILE`."""
    if arg is not None:
        return arg
    env = os.environ.get(USERS_FILE_ENV)
    if not env:
        raise CliError(f"no users file: pass --file or set {USERS_FILE_ENV}")
    return Path(env)


def read_password(from_stdin: bool, *, confirm: bool) -> str:
    """The password from stdin's first line, or from a prompt without echo."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise CliError("the passwords differ")
    if not password:
        raise CliError("empty password")
    return password


def read_lines(path: Path, *, missing_ok: bool) -> list[str]:
    """The lines of the users file, checked to parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise CliError(f"{path}: no such file") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    try:
        parse_users(text)
    except UsersFileError as exc:
        raise CliError(f"{path}: {exc}") from None
    return text.splitlines()


def user_line_index(lines: Sequence[str], name: str) -> int | None:
    """The index of `name`'s entry in `lines`."""
    for index, line in enumerate(lines):
        user = parse_line(line, index + 1)
        if user is not None and user.name == name:
            return index
    return None


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """Replace the users file atomically (mode 0600)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(f"{line}\n" for line in lines))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def add(path: Path, name: str, identities: Sequence[str], from_stdin: bool) -> int:
    if not valid_username(name):
        raise CliError(f"invalid username {name!r} (letters, digits and . _ @ + = - only)")
    try:
        parsed = tuple(Identity.parse(identity) for identity in identities)
    except UsersFileError as exc:
        raise CliError(str(exc)) from None
    lines = read_lines(path, missing_ok=True)
    entry = User(name, hash_password(read_password(from_stdin, confirm=True)), parsed).line()
    index = user_line_index(lines, name)
    if index is None:
        lines.append(entry)
    else:
        lines[index] = entry
    write_lines(path, lines)
    out(f"{'added' if index is None else 'updated'} {name}: {', '.join(str(i) for i in parsed)}")
    return EXIT_OK


def remove(path: Path, name: str) -> int:
    lines = read_lines(path, missing_ok=False)
    index = user_line_index(lines, name)
    if index is None:
        raise CliError(f"no user {name!r}")
    del lines[index]
    write_lines(path, lines)
    out(f"removed {name}")
    return EXIT_OK


def list_users(path: Path) -> int:
    users = parse_users("\n".join(read_lines(path, missing_ok=False)))
    for user in users.values():
        out(f"{user.name}\t{','.join(str(identity) for identity in user.identities)}")
    return EXIT_OK


def verify(path: Path, name: str, from_stdin: bool) -> int:
    users = parse_users("\n".join(read_lines(path, missing_ok=False)))
    password = read_password(from_stdin, confirm=False)
    user = users.get(name)
    if user is not None and verify_password(password.encode("utf-8"), user.password_hash):
        out(f"{name}: password ok")
        return EXIT_OK
    err(f"{name}: no such user or wrong password")
    return EXIT_MISMATCH


def main(argv: Sequence[str] | None = None) -> int:
    """Run `kubemta-admin users ...` with `argv` (without the program name); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        path = users_path(args.file)
        if args.action == "add":
            return add(path, args.user, args.identity, args.password_stdin)
        if args.action == "remove":
            return remove(path, args.user)
        if args.action == "list":
            return list_users(path)
        return verify(path, args.user, args.password_stdin)
    except CliError as exc:
        err(f"kubemta-admin users: {exc}")
        return EXIT_ERROR
