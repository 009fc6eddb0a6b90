"""Noticing a broker connection that does not come back while the broker is up, so the service can stop and be
started again.

aio-pika's robust connection reconnects by itself. Once its reconnection waited for itself for ever (RabbitMQ
4.3.0-4.3.6 after a consumer timeout: consumer.py, tests/e2e/test_consumer_timeout.py): the service neither consumed
nor published, and nothing restarted it, since /healthz (the liveness probe) only says that the process runs, and
restarting on every lost connection would restart every pod through a broker outage. `watch` tells the two apart:
once the service has been disconnected for `stuck_after` seconds, it opens a connection of its own (plain, not
robust, closed at once). When the broker takes it, the broker is up and this process' connection is stuck:
`on_stuck` is called (the service stops with exit status 1, and its supervisor starts it again). When it does
not, the broker is down or unreachable: the service waits, and asks again `stuck_after` later.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq

from kubemta_common.config_types import format_duration

logger = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0
"""How long the watchdog's own connection may take to open."""


async def broker_answers(url: str) -> bool:
    """True when a new plain connection to `url` opens within ANSWER_TIMEOUT seconds (it is closed at once)."""
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            connection = await aio_pika.connect(url)
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
        logger.debug("the broker did not take a new connection: %r", exc)
        return False
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            await connection.close()
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
        logger.debug("closing the watchdog's connection: %r", exc)
    return True


async def watch(
    connected: Callable[[], bool],
    answers: Callable[[], Awaitable[bool]],
    on_stuck: Callable[[str], None],
    *,
    stuck_after: float,
    check_every: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Every `check_every` seconds, look at `connected()`; after `stuck_after` seconds without a connection, call
    `on_stuck(reason)` and return when `answers()` says the broker takes new connections, else wait as long again."""
    down_since: float | None = None
    ask_at = 0.0
    while True:
        await asyncio.sleep(check_every)
        if connected():
            down_since = None
            continue
        now = clock()
        if down_since is None:
            down_since, ask_at = now, now + stuck_after
            continue
        if now < ask_at:
            continue
        if await answers():
            reason = (
                f"not connected to RabbitMQ for {format_duration(round(now - down_since))} while the broker takes new "
                "connections: this process' connection is stuck"
            )
            logger.error("%s; stopping, so that the service is started again", reason)
            on_stuck(reason)
            return
        logger.info(
            "not connected to RabbitMQ for %s, and the broker takes no new connection either: waiting for it",
            format_duration(round(now - down_since)),
        )
        ask_at = now + stuck_after
