"""What the API's routes reach through `request.app.state.tracker`: the index, barriers, broker and settings.

`tracker_context` is the FastAPI dependency that hands it to a route (the read routes in api.py,
the admin routes in admin_api.py).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request

from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.events.emitter import EventSink
from kubemta_common.events.suppression_log import SuppressionLog
from kubemta_tracker.index import Index
from kubemta_tracker.settings import TrackerSettings
from kubemta_tracker.suppression_sync import AppliedChanges
from kubemta_tracker.sync import BarrierSync

QueueDepths = Callable[[], Awaitable[dict[str, int]]]
"""Messages per bus queue, as the broker counts them ({} when it cannot be asked)."""


@dataclass
class TrackerContext:
    """One tracker replica's parts, shared by every request."""

    settings: TrackerSettings
    index: Index
    barriers: BarrierSync
    broker: Broker
    publisher: Publisher
    events: EventSink
    queue_depths: QueueDepths
    suppression_log: SuppressionLog | None = None
    """Where operators' suppression changes go (None: no broker, the write routes answer 503)."""
    applied: AppliedChanges = field(default_factory=AppliedChanges)
    """The suppression changes this replica's requests wait to see indexed (fed by the ingest)."""


def tracker_context(request: Request) -> TrackerContext:
    """Dependency: the replica's `TrackerContext`."""
    context: TrackerContext = request.app.state.tracker
    return context
