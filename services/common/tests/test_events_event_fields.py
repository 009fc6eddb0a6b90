"""event_fields.message_fields writes an event's details exactly as MessageToDict did (the log line's `details`):
every kind of lifecycle event with every field set, the fields left at their zero values, the edge values of
doubles and enums, and the types it hands to MessageToDict (maps, well-known types)."""

import math
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events.event_fields import message_fields

KINDS = [field.name for field in events_pb2.LifecycleEvent.DESCRIPTOR.oneofs_by_name["kind"].fields]


def filled(message: Message, depth: int = 0) -> Message:
    """`message` with every field set to a non-zero value (two items in each repeated field; one member of a
    oneof, the last), nested messages filled too."""
    descriptor: Descriptor = message.DESCRIPTOR  # type: ignore[assignment]
    for field in descriptor.fields:
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue  # none in events.proto
            container: Any = getattr(message, field.name)
            for item in range(2):
                if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                    if depth < 3:
                        filled(container.add(), depth + 1)
                else:
                    container.append(_value(field, item))
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            if depth < 3:
                filled(getattr(message, field.name), depth + 1)
        else:
            setattr(message, field.name, _value(field, 0))
    return message


def _value(field: FieldDescriptor, item: int) -> Any:
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1 - item].number
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"\x00\xffheaders\r\n" * (item + 1)
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return f"{field.name} \u00e9\r\n{item}"
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return True
    if field.cpp_type in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return 0.1 + item
    return 2**31 + 7 + item if field.cpp_type == FieldDescriptor.CPPTYPE_UINT64 else 25 + item


def reference(message: Message, leave_out: str = "") -> dict[str, Any]:
    """What the log line carried before: MessageToDict, without `leave_out`."""
    fields: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    fields.pop(leave_out, None)
    return fields


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_with_every_field_set_is_written_as_message_to_dict_wrote_it(kind: str) -> None:
    event = events_pb2.LifecycleEvent(queue_id="Q1", tags=["a", "b"], attempt=3)
    filled(getattr(event, kind))
    details = getattr(event, kind)
    assert message_fields(details, leave_out="headers") == reference(details, "headers")
    assert list(message_fields(details)) == list(reference(details))  # the same keys in the same order
    assert message_fields(event) == reference(event)  # the top level: a oneof, fields out of number order
    assert list(message_fields(event)) == list(reference(event))


def test_the_received_headers_are_left_out() -> None:
    event = events_pb2.LifecycleEvent()
    event.received.sender = "alice@example.com"
    event.received.headers = b"Subject: secret\r\n"
    assert message_fields(event.received, leave_out="headers") == {"sender": "alice@example.com"}
    assert message_fields(event.received)["headers"] == reference(event.received)["headers"]  # base64


@pytest.mark.parametrize("kind", KINDS)
def test_fields_left_at_their_zero_values_are_not_written(kind: str) -> None:
    event = events_pb2.LifecycleEvent()
    getattr(event, kind).SetInParent()
    assert message_fields(getattr(event, kind)) == reference(getattr(event, kind)) == {}


@pytest.mark.parametrize("duration", [-0.0, math.nan, math.inf, -math.inf, 1e-300, 12.5])
def test_doubles_as_message_to_dict_writes_them(duration: float) -> None:
    attempt = events_pb2.Attempt(duration=duration)
    assert message_fields(attempt) == reference(attempt)
    if duration == 0:
        assert math.copysign(1.0, message_fields(attempt)["duration"]) < 0  # -0.0 is set (its bits are not zero)


def test_an_enum_number_without_a_name_stays_a_number_and_uint64_is_a_string() -> None:
    routed = events_pb2.Routed(kind=message_pb2.TransportKind.ValueType(77), tls_policy=message_pb2.TLS_POLICY_MAY)
    received = events_pb2.Received(size=2**40)
    assert message_fields(routed) == reference(routed) == {"kind": 77, "tls_policy": "TLS_POLICY_MAY"}
    assert message_fields(received) == reference(received) == {"size": str(2**40)}


def test_what_the_plans_do_not_cover_is_written_by_message_to_dict() -> None:
    struct = Struct()
    struct.update({"a": 1, "b": [True, "x"]})
    assert message_fields(struct) == reference(struct) == {"a": 1.0, "b": [True, "x"]}
    job = message_pb2.DeliveryJob(queue_id="Q1")  # has a map field
    job.recipient_dsn["bob@example.org"].SetInParent()
    assert message_fields(job) == reference(job)
