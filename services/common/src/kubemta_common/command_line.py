"""The command line every service shares: `--help` (which lists the KUBEMTA_* variables),
`--version` and `--check-config`; configuration itself comes from the environment."""

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from kubemta_common.config_docs import describe_settings
from kubemta_common.errors import ConfigError
from kubemta_common.runtime import ignore_stop_signals, run
from kubemta_common.settings import ServiceSettings


def _version() -> str:
    try:
        return version("kubemta-common")
    except PackageNotFoundError:
        return "unknown"


def build_parser(service: str, description: str, settings_model: type[ServiceSettings]) -> argparse.ArgumentParser:
    """The argument parser of `kubemta-<service>`."""
    lines = ["configuration (environment variables):"]
    for doc in describe_settings(settings_model):
        lines.append(f"  {doc.variable} (default: {doc.default})")
        if doc.description:
            lines.append(f"      {doc.description}")
    parser = argparse.ArgumentParser(
        prog=f"kubemta-{service}",
        description=description,
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the environment and exit (0: valid, 2: invalid)"
    )
    return parser


def service_main(
    service: str,
    description: str,
    settings_model: type[ServiceSettings],
    serve: Callable[[asyncio.Event], Awaitable[None]],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line, then run `serve(stop_event)` until SIGTERM (see runtime.run)."""
    args = build_parser(service, description, settings_model).parse_args(argv)
    if args.check_config:
        try:
            settings_model.load()
        except ConfigError as exc:
            print(f"kubemta-{service}: {exc}", file=sys.stderr)  # noqa: T201 - command-line answer
            raise SystemExit(2) from None
        print(f"kubemta-{service}: configuration is valid")  # noqa: T201 - command-line answer
        return
    try:
        event_loop = settings_model.load().event_loop
    except ConfigError:
        event_loop = "asyncio"  # `serve` loads the settings again and reports the error as usual
    failure = run(serve, event_loop=event_loop)
    ignore_stop_signals()  # only the interpreter's exit is left
    if failure is not None:
        print(f"kubemta-{service}: stopped: {failure}", file=sys.stderr)  # noqa: T201 - the exit status' reason
        raise SystemExit(1)
