"""The four RabbitMQ streams beside the stage queues: `events` (lifecycle events), `decisions`
(operators' delete/hold/release rules) and `suppressions` (the cluster-wide suppression list's changes),
proto/kubemta/v1/events.proto; `routes` (the dns-resolver's route answers, proto/kubemta/v1/routes.proto).

A stream (`x-queue-type: stream`, RabbitMQ 3.9+) is an append-only log that consumers read
from an offset without removing anything; it is replicated over the cluster's nodes like the
quorum queues and truncated by retention (age and size, whole segments at a time, so small
segments keep the age limit close). Each is bound to the kubemta exchange under their own
name, so a confirmed, mandatory publish to them fails when they are missing.

Retention comes from settings (`KUBEMTA_EVENTS_MAX_AGE`, `KUBEMTA_EVENTS_MAX_BYTES`,
`KUBEMTA_DECISIONS_MAX_AGE`, `KUBEMTA_SUPPRESSION_TTL`); a stream's arguments cannot change in place, so a stream that
exists with other ones (an operator changed the setting) is used as it is and an error says
how to change it (a policy: `max-age`, `max-length-bytes` apply to streams on 3.x and 4.x).

RabbitMQ versions: streams and their AMQP 0-9-1 consumers (`x-stream-offset`, basic.qos
required, manual acknowledgements) work the same on 3.10+ and 4.x; 3.13+ adds stream
filtering, which kubemta does not need (the tracker reads every event).

Why `suppressions` is a stream of its own (docs/suppression.md): an entry lives as long as
`KUBEMTA_SUPPRESSION_TTL` (30 days by default), longer than `events` keeps anything, and a
tracker replica that starts with an empty index must rebuild every live entry from the stream.
Its age limit is that TTL: a change older than it can no longer suppress anything (an admin
entry's TTL is at most the same), so the stream keeps exactly what can still matter.

Why `routes` (kubemta_common.route_answers): a queue-manager sends a first-attempt job straight to `deliver`
while the resolver's answer for its domain is fresh. An answer lives at most ROUTE_ANSWER_MAX_AGE, so the stream
keeps an hour (`ROUTES_MAX_AGE`) in small segments (`ROUTES_SEGMENT_BYTES`) and at most `ROUTES_MAX_BYTES`:
anything older is stale anyway.
"""

from dataclasses import dataclass

from aio_pika.abc import AbstractConnection
from pamqp.common import FieldTable

from kubemta_common.amqp.topology import declare_as_is

EVENTS = "events"
DECISIONS = "decisions"
SUPPRESSIONS = "suppressions"
ROUTES = "routes"
ROUTES_MAX_AGE = 3600.0
"""The `routes` stream's age limit: longer than any answer's lifetime (route_answers.MAX_ANSWER_SECONDS)."""
ROUTES_MAX_BYTES = 256 * 1024 * 1024
ROUTES_SEGMENT_BYTES = 1024 * 1024
"""Small segments: retention drops whole ones, and a reader starting from a time skips to the chunk at it."""
DEFAULT_SUPPRESSION_TTL = 30 * 86400.0
"""KUBEMTA_SUPPRESSION_TTL's default: how long a hard bounce suppresses its recipient, and the age limit of the
`suppressions` stream."""
SEGMENT_BYTES = 16 * 1024 * 1024
"""Stream segment size: retention drops whole segments, so smaller ones keep the age limit close."""


@dataclass(frozen=True, slots=True)
class StreamRetention:
    """How long (seconds) and how much (bytes) each stream keeps."""

    events_max_age: float
    events_max_bytes: int
    decisions_max_age: float
    suppressions_max_age: float = DEFAULT_SUPPRESSION_TTL
    routes_max_age: float = ROUTES_MAX_AGE


def stream_arguments(max_age: float, max_bytes: int | None, segment_bytes: int = SEGMENT_BYTES) -> FieldTable:
    """The declaration arguments of a stream keeping `max_age` seconds (and at most `max_bytes`)."""
    arguments: FieldTable = {
        "x-queue-type": "stream",
        "x-max-age": f"{max(1, int(max_age))}s",
        "x-stream-max-segment-size-bytes": segment_bytes,
    }
    if max_bytes is not None:
        arguments["x-max-length-bytes"] = max_bytes
    return arguments


def stream_declarations(retention: StreamRetention) -> dict[str, FieldTable]:
    """Each stream's name and arguments."""
    return {
        EVENTS: stream_arguments(retention.events_max_age, retention.events_max_bytes),
        DECISIONS: stream_arguments(retention.decisions_max_age, None),
        SUPPRESSIONS: stream_arguments(retention.suppressions_max_age, None),
        ROUTES: stream_arguments(retention.routes_max_age, ROUTES_MAX_BYTES, ROUTES_SEGMENT_BYTES),
    }


async def declare_streams(connection: AbstractConnection, retention: StreamRetention) -> None:
    """Declare and bind every stream, each on a channel of its own (a failed declaration closes its
    channel); one that exists with other arguments is logged and used as it is."""
    for name, arguments in stream_declarations(retention).items():
        advice = (
            "it is used as it is. To change its retention: rabbitmqctl set_policy --apply-to streams "
            f'kubemta-{name} \'^{name}$\' \'{{"max-age": "7D", "max-length-bytes": 10000000000}}\''
        )
        await declare_as_is(connection, name, arguments, advice=advice, kind="stream")
