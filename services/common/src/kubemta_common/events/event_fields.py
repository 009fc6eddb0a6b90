"""An event's details as JSON-ready fields: what `MessageToDict(message, preserving_proto_field_name=True)` gives,
built for a fraction of its cost (every lifecycle event's log line carries them, emitter.py).

MessageToDict decides afresh, for every field of every message, how to write it (its type, an enum's names, a map,
a well-known type). Here that decision is made once per message type, in a plan: one converter per field number,
applied to the fields the message has set (`ListFields`, the same fields in the same order MessageToDict writes).
A message type with a field the plan does not cover exactly (a map, a 32-bit float, an enum with JSON options or
a closed enum) is handed to MessageToDict whole; a well-known type (Timestamp, Duration, wrappers, ...) is written by
MessageToDict too, except a Timestamp, which is its `ToJsonString()`, as MessageToDict writes it.
"""

import base64
import math
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

type Convert = Callable[[Any], Any]
type Step = tuple[str, int, Convert | None]
"""One field: its name, how its presence is known (below), its values' converter (None: written as they are)."""
type Plan = tuple[Step, ...] | None
"""A message type's fields in field-number order (ListFields' order, which MessageToDict follows); None:
MessageToDict writes it."""

_IMPLICIT = 0
"""A proto3 scalar without presence: set when not its zero value."""
_DOUBLE = 1
"""A double without presence: set when not 0.0 (-0.0 is set: its bits are not zero)."""
_PRESENCE = 2
"""A field with presence (a message, a oneof member, `optional`): HasField."""
_REPEATED = 3
"""A repeated field: set when not empty."""

_plans: dict[tuple[str, str], Plan] = {}
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_WELL_KNOWN = "google.protobuf."
_TIMESTAMP = "google.protobuf.Timestamp"


class _Unplanned(Exception):
    """A field the plans do not write exactly like MessageToDict."""


def message_fields(message: Message, leave_out: str = "") -> dict[str, Any]:
    """`message`'s set fields as MessageToDict writes them (proto field names), without the field `leave_out`."""
    plan = _plan(message.DESCRIPTOR, leave_out)
    if plan is None:
        fields: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
        fields.pop(leave_out, None)
        return fields
    fields = {}
    for name, presence, convert in plan:
        if presence == _PRESENCE:
            if not message.HasField(name):
                continue
            value = getattr(message, name)
        else:
            value = getattr(message, name)
            if not value and (presence != _DOUBLE or math.copysign(1.0, value) > 0):
                continue
            if presence == _REPEATED:
                fields[name] = [convert(item) for item in value] if convert is not None else list(value)
                continue
        fields[name] = convert(value) if convert is not None else value
    return fields


def _plan(descriptor: Any, leave_out: str) -> Plan:
    """The plan of a message type, its `Descriptor`, without the field `leave_out` (made on first use)."""
    key = (descriptor.full_name, leave_out)
    try:
        return _plans[key]
    except KeyError:
        pass
    plan: Plan
    try:
        fields = sorted(descriptor.fields, key=lambda field: field.number)
        plan = tuple(_step(field) for field in fields if field.name != leave_out)
    except _Unplanned:
        plan = None
    _plans[key] = plan
    return plan


def _step(field: FieldDescriptor) -> Step:
    convert = _converter(field)
    if field.is_repeated:
        presence = _REPEATED
    elif field.has_presence:
        presence = _PRESENCE
    elif field.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        presence = _DOUBLE
    else:
        presence = _IMPLICIT
    return field.name, presence, None if convert is _same else convert


def _converter(field: FieldDescriptor) -> Convert:
    """How one value of `field` is written (raises _Unplanned for what MessageToDict must write)."""
    cpp_type = field.cpp_type
    if cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message_converter(field)
    if cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return _enum_converter(field)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _base64
    if cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if cpp_type in _INT64:
        return str
    if cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
        raise _Unplanned(field.full_name)  # MessageToDict shortens floats to their shortest repr
    return _same  # strings, 32-bit integers


def _message_converter(field: FieldDescriptor) -> Convert:
    message_type = field.message_type
    if message_type is None or message_type.GetOptions().map_entry:
        raise _Unplanned(field.full_name)
    full_name = message_type.full_name
    if full_name == _TIMESTAMP:
        return _timestamp
    if full_name.startswith(_WELL_KNOWN):
        return _well_known
    return message_fields  # planned on first use (a message type may contain itself)


def _enum_converter(field: FieldDescriptor) -> Convert:
    enum_type = field.enum_type
    if enum_type is None:
        raise _Unplanned(field.full_name)
    special = enum_type.is_closed or enum_type.full_name.startswith(_WELL_KNOWN)  # closed: raises; NullValue: null
    if special or any(value.has_options for value in enum_type.values):  # options: a JSON name of its own
        raise _Unplanned(field.full_name)
    names = {value.number: value.name for value in enum_type.values}

    def enum_name(number: int) -> str | int:
        return names.get(number, number)  # an open enum's unknown number stays a number

    return enum_name


def _same(value: Any) -> Any:
    return value


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("utf-8")


def _double(value: float) -> float | str:
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    if math.isnan(value):
        return "NaN"
    return value


def _timestamp(value: Any) -> str:
    text: str = value.ToJsonString()
    return text


def _well_known(value: Message) -> Any:
    return MessageToDict(value, preserving_proto_field_name=True)
