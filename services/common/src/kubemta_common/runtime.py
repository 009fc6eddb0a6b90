"""Process life cycle shared by the services: configuration errors, signals, shutdown.

`run(main)` starts the event loop and hands `main` an event that is set on SIGTERM or
SIGINT; `main` then drains and returns, and the process exits.

The loop is uvloop's unless KUBEMTA_EVENT_LOOP=asyncio: measured on the full pipeline
(10 KiB messages, `make bench`'s workload) it cut each service's CPU time per message
by about 30%. aiosmtpd's STARTTLS and the ingress' implicit TLS run on it unchanged
(asyncio's SSL protocol over uvloop's transports).
"""

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop

from kubemta_common.errors import ConfigError

logger = logging.getLogger(__name__)


class StopEvent(asyncio.Event):
    """What a service's main waits for: set on SIGTERM or SIGINT, or by `fail`, for a fault the process cannot
    mend by itself (it stops as on SIGTERM, then exits with status 1, for its supervisor to start it again)."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None
        """Why the service stopped itself; None when it was asked to stop."""

    def fail(self, reason: str) -> None:
        """Stop the service because of `reason` (the first reason given is kept)."""
        if self.failure is None:
            self.failure = reason
        self.set()


def run(main: Callable[[asyncio.Event], Awaitable[None]], *, event_loop: str = "uvloop") -> str | None:
    """Run `main(stop_event)` in a fresh event loop (uvloop's or asyncio's) until it returns; the reason the service
    stopped itself (StopEvent.fail), or None."""
    try:
        return asyncio.run(_run(main), loop_factory=uvloop.new_event_loop if event_loop == "uvloop" else None)
    except ConfigError as exc:
        print(f"kubemta: {exc}", file=sys.stderr)  # noqa: T201 - the process cannot start; say why
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        return None


async def _run(main: Callable[[asyncio.Event], Awaitable[None]]) -> str | None:
    stop = StopEvent()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, stop, sig)
    await main(stop)
    return stop.failure


def ignore_stop_signals() -> None:
    """For a service process whose loop has closed: what is left is the interpreter's exit, which a second SIGTERM
    (a supervisor stopping a process already stopping) must not turn into a death by signal (exit -15)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _request_stop(stop: asyncio.Event, sig: signal.Signals) -> None:
    logger.info("received %s, shutting down", sig.name)
    stop.set()
