"""The `dsn` stage: one DSN per message and event, however many destination domains took part.

The results handler publishes one `DsnRequest` per delivery result that has recipients to
report (dsn_requests.py). This consumer holds the requests of one message and one kind
(failed, delayed, success: delivered and relayed together) for `window` seconds from the first
one, then sends a single DSN listing all their recipients, and only after the broker confirmed that DSN are the requests
acknowledged (each request's handler waits for it). So a message whose three domains all
refuse it gets one bounce, not three; a forged sender never gets more than one per event.

The `dsn` queue has a single active consumer (`x-single-active-consumer`): with several
queue-manager replicas, the requests of one message always meet in the same process. When
that consumer goes away, its unacknowledged requests return to the queue and the next
replica becomes the active one and groups them again: nothing is lost, and at worst a DSN
whose confirm came just before a crash is sent twice (at least once, as every stage).

Once a DSN was confirmed the batcher emits its lifecycle events: `received` (generated) for the
DSN, a new message, and `dsn_sent` (a bounce, or a success report: its action says which) or
`delay_warning_sent` on the original message.

At most `max_held` requests are held (the consumer's prefetch): reaching it flushes the
oldest group at once, so a bounce storm is reported in more, smaller DSNs instead of
stalling the stage.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.events.emitter import EventSink
from kubemta_common.logs import message_context, outside_message, sanitize
from kubemta_common.queue_id import new_queue_id
from kubemta_queue_manager import lifecycle, metrics
from kubemta_queue_manager.dsn import Action, Report
from kubemta_queue_manager.dsn_requests import ACTIONS, dsn_message, merged_report

logger = logging.getLogger(__name__)

type GroupKey = tuple[str, int]
"""(queue id of the original message, DsnAction; RELAYED counted as DELIVERED: one success report)."""


def group_key(request: message_pb2.DsnRequest) -> GroupKey:
    """The group of `request`: its message and its kind of report."""
    action = message_pb2.DSN_ACTION_DELIVERED if request.action == message_pb2.DSN_ACTION_RELAYED else request.action
    return (request.queue_id, int(action))


def _kind(report: Report) -> str:
    if report.success:
        return "success"
    return "delay" if report.action is Action.DELAYED else "non-delivery"


@dataclass(slots=True)
class _Group:
    requests: list[message_pb2.DsnRequest]
    done: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None
    job_ids: list[str] = field(default_factory=list)


class DsnBatcher:
    """Groups DSN requests by message and action and sends each group as one DSN."""

    def __init__(
        self,
        publisher: BusPublisher,
        hostname: str,
        *,
        window: float,
        max_held: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        events: EventSink | None = None,
    ) -> None:
        self._publisher = publisher
        self._events = events
        self._hostname = hostname
        self._window = window
        self._max_held = max(1, max_held)
        self._clock = clock
        self._groups: dict[GroupKey, _Group] = {}  # insertion order: the oldest group first
        self._held = 0
        self._flushing: set[asyncio.Task[None]] = set()

    @property
    def held(self) -> int:
        """Requests waiting for their group's DSN."""
        return self._held

    async def add(self, request: message_pb2.DsnRequest) -> None:
        """Hold `request` until the DSN it is part of is confirmed; raises what the publish raised."""
        key = group_key(request)
        group = self._groups.get(key)
        if group is None:
            loop = asyncio.get_running_loop()
            group = _Group([], loop.create_future())
            group.done.add_done_callback(_retrieve)
            group.timer = loop.call_later(self._window, self._flush, key)
            self._groups[key] = group
        group.requests.append(request)
        group.job_ids.append(request.job_id)
        self._held += 1
        if self._held >= self._max_held:
            self._flush(next(iter(self._groups)))
        await asyncio.shield(group.done)  # one request's cancellation (a drain) must not cancel the others'

    def flush_all(self) -> None:
        """Send every group now (at shutdown, so no request waits past the drain)."""
        for key in list(self._groups):
            self._flush(key)

    def _flush(self, key: GroupKey) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        self._held -= len(group.requests)
        # Not the context of the request that happened to trigger the flush (another message's, at max_held):
        # the group's own message is set in _send.
        task = asyncio.get_running_loop().create_task(self._send(key, group), context=outside_message())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, key: GroupKey, group: _Group) -> None:
        with message_context(key[0]):
            await self._send_dsn(group)

    async def _send_dsn(self, group: _Group) -> None:
        try:
            report = merged_report(group.requests, self._hostname)
            dsn = dsn_message(report, queue_id=new_queue_id(), now=self._clock())
            await self._publisher.publish(stages.INBOUND, dsn, message_id=dsn.queue_id)
        except Exception as exc:  # every request goes back to the queue and is grouped again
            logger.warning(
                "DSN for %d recipients not sent, its %d requests return to the queue: %s",
                sum(len(request.recipients) for request in group.requests),
                len(group.requests),
                sanitize(str(exc)),
            )
            group.done.set_exception(exc)
            return
        counters = {"delay": metrics.DELAY_WARNINGS_SENT, "success": metrics.SUCCESS_DSNS_SENT}
        counters.get(_kind(report), metrics.BOUNCES_SENT).inc()
        logger.debug(  # the dsn_sent / delay_warning_sent event below is the INFO line
            "sender %s notification: %s (%d recipients, from %d results: %s)",
            _kind(report),
            dsn.queue_id,
            len(report.recipients),
            len(group.requests),
            ", ".join(sanitize(job_id) for job_id in group.job_ids),
            extra={"dsn_queue_id": dsn.queue_id},
        )
        if self._events is not None:
            self._events.emit(lifecycle.dsn_received(dsn))
            self._events.emit(
                lifecycle.dsn_sent(
                    queue_id=report.queue_id,
                    message_id=group.requests[0].message_id,
                    dsn=dsn,
                    action=ACTIONS[report.action],
                    recipients=[entry.recipient for entry in report.recipients],
                )
            )
        group.done.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed group's exception as seen (its waiters may all have been cancelled)."""
    if not future.cancelled():
        future.exception()
