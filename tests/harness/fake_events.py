"""A stand-in for `kubemta_common.events.emitter.EventLog` (an `EventSink`) in unit tests, and a real one that
never connects (`offline_event_log`).

Keeps every emitted or recorded event in `events`, stamped as the real log stamps them (event id,
time, service, and queue id / job id from the log context when the caller left them empty), so a
test can assert on what a handler said happened. `recorded` is what `record()` answers: True as
if the stream confirmed, False as during a stream outage (the handler must then go on).
"""

import secrets
from collections.abc import Sequence
from typing import Protocol

from kubemta.v1 import events_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.events.emitter import EventLog
from kubemta_common.events.log_kinds import event_kind
from kubemta_common.logs import current_log_context
from kubemta_common.timestamps import now_timestamp


class RecordingEvents:
    """Records emitted events; `record()` answers `recorded`."""

    def __init__(self, *, recorded: bool = True, service: str = "test") -> None:
        self.events: list[events_pb2.LifecycleEvent] = []
        self.recorded = recorded
        self.record_calls = 0
        self.service = service

    def emit(self, event: events_pb2.LifecycleEvent) -> None:
        if not event.event_id:
            event.event_id = secrets.token_hex(12)
        if not event.HasField("time"):
            event.time.CopyFrom(now_timestamp())
        event.service = event.service or self.service
        context = current_log_context()
        if not event.queue_id and context.queue_id:
            event.queue_id = context.queue_id
        if not event.job_id and context.job_id:
            event.job_id = context.job_id
        self.events.append(event)

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        self.record_calls += 1
        self.emit(event)
        return self.recorded

    def kinds(self) -> list[str]:
        """The kinds of the events so far, in order (received, queued, ...)."""
        return [event_kind(event) for event in self.events]

    def of_kind(self, kind: str) -> list[events_pb2.LifecycleEvent]:
        """The events of one kind, in order."""
        return [event for event in self.events if event_kind(event) == kind]


class Publishes(Protocol):
    """A fake publisher: what it confirmed so far."""

    @property
    def published(self) -> Sequence[object]: ...


class PublishCountingEvents(RecordingEvents):
    """Records, with each recorded event, how many messages `publisher` had confirmed by then
    (`published_at_record`): whether an event was recorded before or after the publish it must follow."""

    def __init__(self, publisher: Publishes, *, recorded: bool = True, service: str = "test") -> None:
        super().__init__(recorded=recorded, service=service)
        self.publisher = publisher
        self.published_at_record: list[int] = []

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        self.published_at_record.append(len(self.publisher.published))
        return await super().record(event)


def offline_event_log(
    *, service: str = "ingress", buffer: int = 100, confirm_timeout: float = 1.0, kinds: frozenset[str] | None = None
) -> EventLog:
    """A real EventLog on a broker that never connects (its events stay buffered; `kinds`: the logged kinds)."""
    broker = Broker("amqp://guest:guest@127.0.0.1:1/none", name="test", retry_delays=(1.0,), reconnect_interval=1)
    return EventLog(
        broker, service=service, buffer=buffer, confirm_timeout=confirm_timeout, publish_timeout=1.0, logged_kinds=kinds
    )
