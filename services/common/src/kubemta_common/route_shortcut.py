"""Sending a first-attempt job straight to `deliver` while the dns-resolver's answer for its domain is fresh.

The resolver stays the owner of routing: it appends its answers to the `routes` stream
(kubemta_common.route_answer_log); `RouteAnswerFollower` reads them into a bounded `RouteAnswers` map
(kubemta_common.route_answers), from a little further back than any answer lives. Two services use it: the
ingress for a message of one job that it may queue straight to `deliver` (kubemta_ingress.direct_jobs), the
queue-manager for the jobs of every other message it splits. `RouteShortcut.attach(job)` gives a job the
answer's route (its equal-preference hosts drawn afresh for this job, RFC 5321 §5.1: kubemta_common.route_order)
only when all of these hold:
- the shortcut is on (KUBEMTA_ROUTE_SHORTCUT);
- the job is a first attempt (`attempts == 0`) and not `maybe_duplicate` (a possible second copy goes through
  the resolver, which asks the tracker whether it was routed already);
- the operators' decisions were read and none applies to the job (a held or deleted job goes through the
  resolver, which holds or deletes it);
- the domain's answer is fresh.
`kubemta_route_answers_total{result}` counts every first attempt looked at by what decided it: `used` (sent straight
to `deliver`), `missing` or `stale` (no fresh answer), `waiting` (the operators' decisions not read yet: a service
that just started) and `decided` (an operator's decision applies to the job).
Every other job goes to `route` as before; retries always do (retry.* dead-letters into `route`).
"""

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import Counter

from kubemta.v1 import message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.streams import ROUTES
from kubemta_common.background_task import cancel_and_wait
from kubemta_common.events.decision_follower import JobVerdicts
from kubemta_common.events.decisions import Action
from kubemta_common.events.stream_reader import StreamReader, StreamRecord
from kubemta_common.metrics import preinitialise
from kubemta_common.route_answers import MAX_ANSWER_SECONDS, RouteAnswers, parse_answer
from kubemta_common.route_order import reorder_route

logger = logging.getLogger(__name__)

READ_BACK = MAX_ANSWER_SECONDS + 60.0
"""How far back the follower starts reading `routes`: every answer that can still be fresh, and a margin."""

ROUTE_ANSWERS = Counter(
    "kubemta_route_answers",
    "First-attempt jobs and what decided their way: used (the route answer: sent straight to deliver), missing or "
    "stale (no fresh answer), waiting (the operators' decisions not read yet), decided (an operator's decision "
    "applies); all but used go to route",
    ["result"],
)
ROUTE_ANSWER_RESULTS = ("used", "missing", "stale", "waiting", "decided")
preinitialise(ROUTE_ANSWERS, result=ROUTE_ANSWER_RESULTS)
_ROUTE_ANSWER_COUNTS = {result: ROUTE_ANSWERS.labels(result=result) for result in ROUTE_ANSWER_RESULTS}
"""The children of ROUTE_ANSWERS (RouteAnswers.lookup's results, and `waiting` and `decided` from
RouteShortcut.attach), looked up once: `labels()` costs a few microseconds a job."""


class RouteShortcut:
    """Decides, per job being split, whether it goes straight to `deliver` (see the module docstring)."""

    def __init__(
        self,
        answers: RouteAnswers,
        verdicts: JobVerdicts,
        *,
        decisions_ready: asyncio.Event | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._answers = answers
        self._verdicts = verdicts
        self._ready = decisions_ready
        self._clock = clock
        self._rng = rng or random.Random()

    async def attach(self, job: message_pb2.DeliveryJob) -> bool:
        """Give `job` the fresh answer's route (True), or leave it for the resolver (False)."""
        if job.attempts or job.maybe_duplicate or job.HasField("route"):
            return False
        if self._ready is not None and not self._ready.is_set():
            _ROUTE_ANSWER_COUNTS["waiting"].inc()
            return False  # the decisions are still being read: the resolver waits for them
        route, result = self._answers.lookup(job.domain, self._clock())
        if route is None:
            _ROUTE_ANSWER_COUNTS[result].inc()
            return False
        verdict = await self._verdicts.verdict(job)
        if verdict.action is not Action.NONE:
            _ROUTE_ANSWER_COUNTS["decided"].inc()
            return False
        job.route.CopyFrom(route)
        reorder_route(job.route, self._rng)
        _ROUTE_ANSWER_COUNTS["used"].inc()
        return True


class RouteAnswerFollower:
    """Keeps `answers` up to date from the `routes` stream (a StreamReader from READ_BACK seconds ago)."""

    def __init__(self, broker: Broker, answers: RouteAnswers, *, clock: Callable[[], float] = time.time) -> None:
        self.answers = answers
        self._clock = clock
        start = datetime.now(UTC) - timedelta(seconds=READ_BACK)
        self._reader = StreamReader(broker, ROUTES, self._handle, start=start, prefetch=1000, caught_up_within=10.0)
        self._task: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> asyncio.Event:
        """Set once the answers the stream held at the start were read (or the reader stopped waiting)."""
        return self._reader.caught_up

    def start(self) -> None:
        """Read in a background task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._reader.run(), name="kubemta-route-answers")

    async def stop(self) -> None:
        """Stop reading (the answers read stay)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _handle(self, records: list[StreamRecord]) -> None:
        now = self._clock()
        for record in records:
            try:
                answer = parse_answer(record.body, now)
            except Exception:  # never let a record stop the reader: the next ones still count
                logger.exception("a routes stream record at offset %d could not be read: ignored", record.offset)
                continue
            if answer is not None:
                self.answers.add(answer)
