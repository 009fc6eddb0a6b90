"""Process life cycle shared by the services: configuration errors, signals, shutdown.

`run(main)` starts the event loop and hands `main` an event that is set on SIGTERM or
SIGINT; `main` then drains and returns, and the process exits.
"""

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from kubemta_common.errors import ConfigError

logger = logging.getLogger(__name__)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop_event)` in a fresh event loop until it returns."""
    try:
        asyncio.run(_run(main))
    except ConfigError as exc:
        print(f"kubemta: {exc}", file=sys.stderr)  # noqa: T201 - the process cannot start; say why
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


async def _run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    await main(stop)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    logger.info("received %s, shutting down", sig.name)
    stop.set()
