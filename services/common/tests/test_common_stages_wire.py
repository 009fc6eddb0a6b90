"""Typed stages keep the wire format byte for byte: body, properties, type names and routing keys are what
every earlier version published (literal values below), so old and new pods interoperate in a rolling upgrade."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import DeliveryMode
from pamqp.commands import Basic

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe
from kubemta_common.amqp.publisher import ISOLATED_ABOVE, Publisher
from kubemta_common.amqp.topology import LARGE_BODY, lane
from kubemta_common.bus_messages import encoded_with_field
from kubemta_common.errors import MessageTooLarge, PermanentError

Sent = tuple[bytes, Basic.Properties, str, bool]
"""(body, properties, routing key, mandatory) of one basic.publish."""


class Channel:
    """The aiormq channel the publisher publishes on."""

    def __init__(self, sent: list[Sent]) -> None:
        self.sent = sent

    async def basic_publish(
        self, body: bytes, *, exchange: str, routing_key: str, properties: Basic.Properties, mandatory: bool, **_: Any
    ) -> None:
        assert exchange == "kubemta"
        self.sent.append((body, properties, routing_key, mandatory))


class Broker:
    """Confirms everything; records what went on which channel."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.isolated = 0
        self.channel = Channel(self.sent)

    async def publish_channel(self) -> Channel:
        return self.channel

    @contextlib.asynccontextmanager
    async def isolated_channel(self) -> AsyncIterator[Channel]:
        self.isolated += 1
        yield Channel(self.sent)


def wire(body: bytes, properties: Basic.Properties, routing_key: str, mandatory: bool) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "body": body,
        "type": properties.message_type,
        "message_id": properties.message_id,
        "content_type": properties.content_type,
        "delivery_mode": properties.delivery_mode,
        "headers": dict(properties.headers or {}),
        "mandatory": mandatory,
    }


async def test_the_properties_are_byte_for_byte_those_aio_pika_sent_before() -> None:
    broker = Broker()
    publisher = Publisher(broker, 5.0)  # type: ignore[arg-type]
    await publisher.publish_raw("held", b"x", message_id="MID", message_type="T", headers={"x-kubemta-held": "1"})
    await publisher.publish_raw("inbound", b"x", message_id="MID", message_type="T")
    held_headers: dict[str, Any] = {"x-kubemta-held": "1"}
    before = [
        aio_pika.Message(
            b"x",
            delivery_mode=DeliveryMode.PERSISTENT,
            content_type="application/x-protobuf",
            message_id="MID",
            type="T",
            headers=headers,
        ).properties.marshal()
        for headers in (held_headers, None)
    ]
    assert [properties.marshal() for _, properties, _, _ in broker.sent] == before


def job(content: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", domain="example.org", recipients=["a@example.org"],
                                   content=content)  # fmt: skip


SMALL = job()
LARGE = job(b"x" * (LARGE_BODY + 1))
ACCEPTED = message_pb2.AcceptedMessage(queue_id="Q", sender="s@example.net", recipients=["a@example.org"], content=b"c")
RESULT = message_pb2.DeliveryResult(job=SMALL, reporter="delivery-worker")
REQUEST = message_pb2.DsnRequest(queue_id="Q", sender="s@example.net", job_id="Q.1", original_headers=b"x" * 300_000)
CASES: list[tuple[stages.Stage[Any], Any, str, str]] = [
    (stages.INBOUND, ACCEPTED, "inbound", "kubemta.v1.AcceptedMessage"),
    (stages.ROUTE, SMALL, "route", "kubemta.v1.DeliveryJob"),
    (stages.ROUTE, LARGE, "route.large", "kubemta.v1.DeliveryJob"),
    (stages.DELIVER, SMALL, "deliver", "kubemta.v1.DeliveryJob"),
    (stages.DELIVER, LARGE, "deliver.large", "kubemta.v1.DeliveryJob"),
    (stages.RESULTS, RESULT, "results", "kubemta.v1.DeliveryResult"),
    (stages.retry(300), SMALL, "retry.5m", "kubemta.v1.DeliveryJob"),
    (stages.retry(300), LARGE, "retry.5m.large", "kubemta.v1.DeliveryJob"),
    (stages.DSN, REQUEST, "dsn", "kubemta.v1.DsnRequest"),  # no large lane, however large
]


@pytest.mark.parametrize(("stage", "message", "routing_key", "type_name"), CASES)
async def test_a_stage_publishes_what_earlier_versions_published(stage, message, routing_key, type_name) -> None:
    broker = Broker()
    publisher = Publisher(broker, 5.0)  # type: ignore[arg-type]
    await publisher.publish(stage, message, message_id="MID")
    await publisher.publish_raw(stage.queue, message.SerializeToString(), message_id="MID", message_type=type_name)

    typed, raw = (wire(*sent) for sent in broker.sent)
    assert (
        typed
        == raw
        == {
            "routing_key": routing_key,
            "body": message.SerializeToString(),
            "type": type_name,
            "message_id": "MID",
            "content_type": "application/x-protobuf",
            "delivery_mode": DeliveryMode.PERSISTENT,
            "headers": {},
            "mandatory": True,
        }
    )
    assert routing_key == lane(stage.queue, len(message.SerializeToString())) or stage is stages.DSN


async def test_publish_all_sends_each_outgoing_as_a_single_publish_would() -> None:
    broker = Broker()
    publisher = Publisher(broker, 5.0)  # type: ignore[arg-type]
    await publisher.publish_all([stage.outgoing(message, message_id="MID") for stage, message, _, _ in CASES])
    assert [(routing_key, properties.message_type) for _, properties, routing_key, _ in broker.sent] == [
        (routing_key, type_name) for _, _, routing_key, type_name in CASES
    ]


async def test_an_encoded_message_is_the_message_serialised_and_large_bodies_get_their_own_channel() -> None:
    broker = Broker()
    publisher = Publisher(broker, 5.0)  # type: ignore[arg-type]
    content = b"z" * ISOLATED_ABOVE
    head = message_pb2.AcceptedMessage(queue_id="Q", sender="s@example.net", recipients=["a@example.org"])
    encoded = encoded_with_field(head, message_pb2.AcceptedMessage.CONTENT_FIELD_NUMBER, [content])
    await publisher.publish(stages.INBOUND, encoded, message_id="Q")
    full = message_pb2.AcceptedMessage(queue_id="Q", sender="s@example.net", recipients=["a@example.org"])
    full.content = content
    ((body, _, routing_key, _),) = broker.sent
    assert (body, routing_key, broker.isolated) == (full.SerializeToString(), "inbound.large", 1)


async def test_a_body_over_the_broker_limit_is_refused_before_the_broker() -> None:
    publisher = Publisher(Broker(), 5.0, max_message_size=100)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge):
        await publisher.publish(stages.ROUTE, LARGE, message_id="Q.1")
    assert publisher.in_flight == 0


class Incoming:
    def __init__(self, body: bytes) -> None:
        self.body = body


async def test_a_consumer_decodes_by_stage_and_holds_what_does_not_decode() -> None:
    seen: list[message_pb2.DeliveryJob] = []

    async def handle(received: message_pb2.DeliveryJob) -> None:
        seen.append(received)

    on_delivery = subscribe(stages.DELIVER, handle).on_delivery
    await on_delivery(Incoming(SMALL.SerializeToString()))  # type: ignore[arg-type]
    assert seen == [SMALL]
    with pytest.raises(PermanentError, match="undecodable DeliveryJob"):
        await on_delivery(Incoming(b"\xff\xff not protobuf"))  # type: ignore[arg-type]
    assert len(seen) == 1


def test_the_consumed_content_stages_are_the_topology_s() -> None:
    from kubemta_common.amqp.topology import CONTENT_STAGES

    assert tuple(stage.queue for stage in stages.CONTENT_STAGES) == CONTENT_STAGES
    assert all(stage.large_lane for stage in stages.CONTENT_STAGES) and not stages.DSN.large_lane
