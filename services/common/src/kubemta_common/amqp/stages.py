"""Typed bus stages: a stage names its queue, its protobuf message type and its large-lane rule.

Publishers and consumers use a stage, never a queue name and raw bytes, so a message of
the wrong type for a queue is a type error (mypy), not a surprise in another service:

- `publisher.publish(stages.ROUTE, job, message_id=...)` takes only a `DeliveryJob` (or the
  `Encoded[DeliveryJob]` of one, built without a copy of its content: bus_messages.py);
- `stages.retry(delay)` is the `DeliveryJob` stage of one delay queue;
- a consumer of a stage decodes each delivery as the stage's type before its handler sees it
  (service.py `consume`); a body that does not decode is a PermanentError, held as before.

The wire format is the one every earlier version used (mixed versions interoperate during a
rolling upgrade): the body is the serialised message, the AMQP `type` property its protobuf
full name (`kubemta.v1.DeliveryJob`), the routing key the queue, or its large lane
(topology.py) for a body over `LARGE_BODY` on a content stage.
"""

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from kubemta.v1 import message_pb2
from kubemta_common.amqp import topology
from kubemta_common.bus_messages import Encoded, decode


@dataclass(frozen=True, slots=True)
class Stage[M: Message]:
    """One queue of the bus and the protobuf type of every message on it."""

    queue: str
    """The queue name, also the routing key of its small lane."""
    message: type[M]
    """The protobuf class of the messages on the queue."""
    large_lane: bool = True
    """It carries whole mail messages: a body over LARGE_BODY goes to `<queue>.large` (topology.py)."""

    @property
    def type_name(self) -> str:
        """The AMQP `type` property of its messages: the protobuf full name, e.g. `kubemta.v1.DeliveryJob`."""
        return self.message.DESCRIPTOR.full_name

    def lane(self, size: int) -> str:
        """The routing key of a body of `size` bytes: the large lane when it has one and the body is large."""
        return topology.large(self.queue) if self.large_lane and size > topology.LARGE_BODY else self.queue

    def decode(self, body: bytes) -> M:
        """The message in `body`; PermanentError (the consumer holds it) when it is not one of this stage's type."""
        return decode(self.message, body)

    def outgoing(self, message: M | Encoded[M], *, message_id: str) -> "Outgoing":
        """`message` serialised (now, so a batch holds bytes, not messages) for this stage, with its message id."""
        body = message.body if isinstance(message, Encoded) else message.SerializeToString()
        return Outgoing(self, body, message_id)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to publish: its stage, its body and its AMQP message id (Publisher.publish_all)."""

    stage: Stage[Any]
    body: bytes
    message_id: str

    @property
    def routing_key(self) -> str:
        """Where it goes: the stage's queue or its large lane (Stage.lane)."""
        return self.stage.lane(len(self.body))

    @property
    def message_type(self) -> str:
        """The AMQP `type` property."""
        return self.stage.type_name


INBOUND = Stage(topology.INBOUND, message_pb2.AcceptedMessage)
"""Accepted messages (ingress, and DSNs from the queue-manager) -> queue-manager."""
ROUTE = Stage(topology.ROUTE, message_pb2.DeliveryJob)
"""Delivery jobs without a route -> dns-resolver."""
DELIVER = Stage(topology.DELIVER, message_pb2.DeliveryJob)
"""Routed jobs -> delivery-worker."""
RESULTS = Stage(topology.RESULTS, message_pb2.DeliveryResult)
"""Delivery results -> queue-manager."""
DSN = Stage(topology.DSN, message_pb2.DsnRequest, large_lane=False)
"""DSN requests -> the queue-manager's DSN batcher (small: original headers only)."""
CONTENT_STAGES: tuple[Stage[Any], ...] = (INBOUND, ROUTE, DELIVER, RESULTS)
"""The consumed stages with a large lane (topology.CONTENT_STAGES)."""


def retry(delay_seconds: float) -> Stage[message_pb2.DeliveryJob]:
    """The delay queue of one retry delay (`retry.5m`): jobs wait there, then dead-letter back to `route`."""
    return Stage(topology.retry_queue_name(delay_seconds), message_pb2.DeliveryJob)
