"""Which lifecycle events a service also writes as log lines (KUBEMTA_LOG_EVENTS).

Every event goes to the `events` stream, where the tracker indexes it; by default each is also one structured log
line (`event=<kind>`, emitter.py), about 500 bytes, five for a relayed message. An operator who reads delivery
history from the tracker, or pays for log volume, may keep only some kinds in the logs (say the failures) or none.
"""

from kubemta.v1 import events_pb2

EVENT_KINDS: tuple[str, ...] = tuple(
    field.name for field in events_pb2.LifecycleEvent.DESCRIPTOR.oneofs_by_name["kind"].fields
)
"""Every kind of lifecycle event, in the order of the `kind` oneof."""


def event_kind(event: events_pb2.LifecycleEvent) -> str:
    """The event's kind: the name of its `kind` field (received, delivered, ...), "" when unset."""
    return event.WhichOneof("kind") or ""


ALL = "all"
NONE = "none"


def logged_kinds(setting: str) -> frozenset[str] | None:
    """The kinds `setting` names: None (every kind) for `all`, no kind for `none`, else its comma-separated kinds
    (case and spaces ignored). An unknown kind is a ValueError that names it and the known ones."""
    words = [word.strip().lower() for word in setting.split(",") if word.strip()]
    if words == [ALL]:
        return None
    if words == [NONE]:
        return frozenset()
    unknown = [word for word in words if word not in EVENT_KINDS]
    if unknown or not words:
        named = f"{', '.join(repr(word[:40]) for word in unknown[:5])} is not an event kind" if unknown else "empty"
        raise ValueError(f"{named}: expected all, none, or a comma-separated list of {', '.join(EVENT_KINDS)}")
    return frozenset(words)
