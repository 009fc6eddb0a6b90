"""Appending the dns-resolver's route answers to the `routes` stream, in the background.

`offer(domain, route, fresh_for)` is called for every job the resolver routed; it never blocks, never raises
and publishes nothing when an answer for the domain it published (or queued) is still fresh for longer than
`REFRESH_BEFORE` seconds: at most about one record per domain per answer lifetime, not one per job. Answers
wait in a bounded buffer (`buffer`; beyond it the oldest are dropped) for a background task that publishes
them one at a time with a confirm, retried after a growing pause while the stream does not take them (like
kubemta_common.events.suppression_log). An answer that became stale while waiting is dropped. Mail never
waits for any of it: a missing answer only means the queue-manager sends the job through `route`.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter

from kubemta.v1 import message_pb2, routes_pb2
from kubemta_common.amqp.publisher import HeldPublisher
from kubemta_common.amqp.streams import ROUTES
from kubemta_common.background_task import cancel_and_wait
from kubemta_common.errors import MessageTooLarge, PublishFailed
from kubemta_common.route_answers import ANSWER_TYPE, MAX_ANSWER_SECONDS, answer_record
from kubemta_common.ttl_cache import TtlLruCache

logger = logging.getLogger(__name__)

MIN_FRESH = 5.0
"""An answer fresh for less than this is not worth publishing."""
REFRESH_BEFORE = 2.0
"""A domain's answer is offered again once the last one has less than this left."""
MAX_RETRY_PAUSE = 5.0

ANSWERS_PUBLISHED = Counter(
    "kubemta_route_answers_published", "Route answers the `routes` stream confirmed (one per domain per lifetime)"
)


class RouteAnswerLog:
    """The resolver's writer of `routes`: `offer` per routed job, `start` once the publisher exists, `close`."""

    def __init__(self, *, buffer: int = 10000, domains: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._limit = max(1, buffer)
        self._clock = clock
        self._offered: TtlLruCache[str, float] = TtlLruCache(domains, clock)
        self._buffer: deque[routes_pb2.RouteAnswer] = deque()
        self._wake = asyncio.Event()
        self._publisher: HeldPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def buffered(self) -> int:
        """Answers not yet confirmed by the stream."""
        return len(self._buffer)

    def start(self, publisher: HeldPublisher) -> None:
        """Start publishing with `publisher` (the service's: confirmed, within KUBEMTA_PUBLISH_TIMEOUT)."""
        self._publisher = publisher
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kubemta-route-answers")

    def offer(self, domain: str, route: message_pb2.Route, fresh_for: float) -> None:
        """The resolver built `route` for mail to `domain`, usable for `fresh_for` more seconds: queue it for the
        stream unless an answer for `domain` queued earlier is still fresh enough."""
        fresh_for = min(fresh_for, MAX_ANSWER_SECONDS)
        if fresh_for < MIN_FRESH or not domain or not route.hosts:
            return
        if self._offered.get(domain) is not None:
            return
        now = self._clock()
        self._offered.put(domain, now + fresh_for, fresh_for - REFRESH_BEFORE)
        while len(self._buffer) >= self._limit:
            self._buffer.popleft()
        self._buffer.append(answer_record(domain, route, now=now, fresh_for=fresh_for))
        self._wake.set()

    async def _run(self) -> None:
        pause = 0.1
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
                continue
            record = self._buffer[0]
            if record.fresh_until.ToSeconds() - self._clock() < MIN_FRESH:
                self._buffer.popleft()  # stale before the stream took it: worthless now
                continue
            if await self._publish(record):
                if self._buffer and self._buffer[0] is record:
                    self._buffer.popleft()
                ANSWERS_PUBLISHED.inc()
                self._failing, pause = False, 0.1
                continue
            self._failing = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_PAUSE)

    async def _publish(self, record: routes_pb2.RouteAnswer) -> bool:
        assert self._publisher is not None
        try:
            await self._publisher.publish_raw(
                ROUTES, record.SerializeToString(), message_id=f"route:{record.domain}", message_type=ANSWER_TYPE
            )
        except (PublishFailed, MessageTooLarge) as exc:  # mail goes on through `route`
            if not self._failing:
                logger.warning("the %s stream did not take a route answer (retrying): %s", ROUTES, exc)
            return False
        return True

    async def close(self) -> None:
        """Stop publishing (what is buffered is dropped: answers are only a shortcut)."""
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
