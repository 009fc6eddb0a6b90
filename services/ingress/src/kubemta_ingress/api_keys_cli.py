"""`kubemta-admin api-keys ...`: manage the API keys file (api_keys.py) from the command line.

    kubemta-admin api-keys create NAME --identity app@example.com --identity example.org [--file PATH]
    kubemta-admin api-keys list
    kubemta-admin api-keys show NAME
    kubemta-admin api-keys rotate NAME [--keep-old] [--identity ...]
    kubemta-admin api-keys remove NAME

The file defaults to `$KUBEMTA_API_KEYS_FILE`. `create` and `rotate` print the new key on
standard output and nothing else there (so `KEY=$(kubemta-admin api-keys create ...)` works),
with a hint on standard error: the key is shown this once, the file only holds its hash.
`create` refuses an existing name; `rotate` replaces the key (and, given `--identity`, the
identities), and with `--keep-old` keeps the old key as `NAME~old`, still valid as the same
principal, until `remove NAME~old` ends the overlap. `list` and `show` print names, keyids and
identities; no command prints a hash. The file is written atomically with mode 0600 (as the
users file, cli.write_lines), comments and other lines kept; a file that does not parse is
not edited. Exit status as `kubemta-admin users`: 0 done, 2 for any error.
"""

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from kubemta_ingress.api_keys import (
    OLD_SUFFIX,
    ApiKey,
    ApiKeys,
    ApiKeysFileError,
    new_key,
    parse_api_keys,
    parse_line,
    valid_name,
)
from kubemta_ingress.cli import EXIT_ERROR, EXIT_OK, CliError, err, out, write_lines
from kubemta_ingress.users import Identity, UsersFileError

API_KEYS_FILE_ENV = "KUBEMTA_API_KEYS_FILE"
COMMAND = "api-keys"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `kubemta-admin api-keys`."""
    parser = argparse.ArgumentParser(
        prog=f"kubemta-admin {COMMAND}", description="Manage the API keys of the HTTP API (POST /v1/messages)."
    )
    actions = parser.add_subparsers(dest="action", required=True)

    def with_file(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--file", type=Path, help=f"API keys file (default: ${API_KEYS_FILE_ENV})")
        return sub

    identity_help = "sender address (app@example.com) or domain (example.com, @example.com); repeatable"
    create = with_file(actions.add_parser("create", help="create a key and print it (once) on standard output"))
    create.add_argument("name")
    create.add_argument("--identity", action="append", required=True, help=identity_help)
    with_file(actions.add_parser("list", help="list keys: name, keyid, identities"))
    show = with_file(actions.add_parser("show", help="show one key's keyid and identities"))
    show.add_argument("name")
    rotate = with_file(actions.add_parser("rotate", help="replace a key and print the new one (once)"))
    rotate.add_argument("name")
    rotate.add_argument("--identity", action="append", help=f"new identities (default: keep them); {identity_help}")
    rotate.add_argument(
        "--keep-old", action="store_true", help=f"keep the old key valid as NAME{OLD_SUFFIX} until it is removed"
    )
    remove = with_file(actions.add_parser("remove", help=f"remove a key (NAME{OLD_SUFFIX}: end a rotation's overlap)"))
    remove.add_argument("name")
    return parser


def keys_path(arg: Path | None) -> Path:
    """The API keys file named by `--file` or `$KUBEMTA_API_KEYS_FILE`."""
    if arg is not None:
        return arg
    env = os.environ.get(API_KEYS_FILE_ENV)
    if not env:
        raise CliError(f"no API keys file: pass --file or set {API_KEYS_FILE_ENV}")
    return Path(env)


def read_lines(path: Path, *, missing_ok: bool) -> tuple[list[str], ApiKeys]:
    """The lines of the API keys file and its keys, checked to parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return [], ApiKeys({}, {})
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None
    try:
        keys = parse_api_keys(text)
    except ApiKeysFileError as exc:
        raise CliError(f"{path}: {exc}") from None
    return text.splitlines(), keys


def line_index(lines: Sequence[str], name: str) -> int | None:
    """The index of `name`'s entry in `lines` (which parse: read_lines checked them)."""
    for index, line in enumerate(lines):
        key = parse_line(line, index + 1)
        if key is not None and key.name == name:
            return index
    return None


def parse_identities(identities: Sequence[str]) -> tuple[Identity, ...]:
    try:
        return tuple(Identity.parse(identity) for identity in identities)
    except UsersFileError as exc:
        raise CliError(str(exc)) from None


def check_name(name: str) -> None:
    if not valid_name(name) or name.endswith(OLD_SUFFIX):
        raise CliError(f"invalid key name {name!r} (letters, digits and . _ @ + = - only)")


def describe(key: ApiKey) -> str:
    return ", ".join(str(identity) for identity in key.identities)


def hand_over(name: str, keyid: str, token: str, identities: str) -> None:
    """The key on standard output, alone; what it is, on standard error."""
    out(token)
    err(f"API key {name} (keyid {keyid}, identities: {identities}): shown once, store it now; the file keeps a hash")


def create(path: Path, name: str, identities: Sequence[str]) -> int:
    check_name(name)
    parsed = parse_identities(identities)
    lines, keys = read_lines(path, missing_ok=True)
    if name in keys.by_name:
        raise CliError(f"a key named {name!r} exists: rotate it, or remove it first")
    made = new_key(name, parsed, taken=keys.by_keyid)
    write_lines(path, [*lines, made.entry.line()])
    hand_over(name, made.entry.keyid, made.token, describe(made.entry))
    return EXIT_OK


def rotate(path: Path, name: str, identities: Sequence[str] | None, keep_old: bool) -> int:
    check_name(name)
    parsed = parse_identities(identities) if identities else None
    lines, keys = read_lines(path, missing_ok=False)
    index = line_index(lines, name)
    if index is None:
        raise CliError(f"no key {name!r}")
    old = keys.by_name[name]
    old_name = f"{name}{OLD_SUFFIX}"
    if keep_old and old_name in keys.by_name:
        raise CliError(f"{old_name} exists (an earlier overlap): remove it first")
    made = new_key(name, parsed if parsed is not None else old.identities, taken=keys.by_keyid)
    lines[index] = made.entry.line()
    if keep_old:
        lines.insert(index + 1, ApiKey(old_name, old.keyid, old.digest, old.identities).line())
    write_lines(path, lines)
    hand_over(name, made.entry.keyid, made.token, describe(made.entry))
    if keep_old:
        err(f"the old key (keyid {old.keyid}) stays valid as {old_name}: `remove {old_name}` once clients switched")
    return EXIT_OK


def remove(path: Path, name: str) -> int:
    lines, _ = read_lines(path, missing_ok=False)
    index = line_index(lines, name)
    if index is None:
        raise CliError(f"no key {name!r}")
    del lines[index]
    write_lines(path, lines)
    out(f"removed {name}")
    return EXIT_OK


def list_keys(path: Path) -> int:
    _, keys = read_lines(path, missing_ok=False)
    for key in keys.by_name.values():
        out(f"{key.name}\t{key.keyid}\t{','.join(str(identity) for identity in key.identities)}")
    return EXIT_OK


def show(path: Path, name: str) -> int:
    _, keys = read_lines(path, missing_ok=False)
    key = keys.by_name.get(name)
    if key is None:
        raise CliError(f"no key {name!r}")
    out(f"name: {key.name}")
    out(f"principal: {key.principal_name}")
    out(f"keyid: {key.keyid}")
    out(f"identities: {describe(key)}")
    old = keys.by_name.get(f"{name}{OLD_SUFFIX}")
    if old is not None:
        out(f"old keyid: {old.keyid} (valid until `remove {old.name}`)")
    return EXIT_OK


def main(argv: Sequence[str]) -> int:
    """`argv` starts with "api-keys"; the exit status (argparse exits with 2 for a usage error)."""
    args = build_parser().parse_args(list(argv[1:]))
    try:
        path = keys_path(args.file)
        if args.action == "create":
            return create(path, args.name, args.identity)
        if args.action == "rotate":
            return rotate(path, args.name, args.identity, args.keep_old)
        if args.action == "remove":
            return remove(path, args.name)
        if args.action == "list":
            return list_keys(path)
        return show(path, args.name)
    except CliError as exc:
        err(f"kubemta-admin {COMMAND}: {exc}")
        return EXIT_ERROR
