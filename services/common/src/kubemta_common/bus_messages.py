"""Decoding bus payloads (a payload that is not the expected protobuf message is a permanent
error: the consumer rejects it to `held`, where an operator can look at it), and encoding one
large field without copying the message content more than once (`with_field`; `Encoded` keeps
the type of what it encoded, so a stage still takes only its own type: amqp/stages.py).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from kubemta_common.errors import PermanentError


def decode[M: Message](message_class: type[M], payload: bytes) -> M:
    """Parse `payload` as `message_class`, raising PermanentError when it is not one."""
    try:
        return message_class.FromString(payload)
    except DecodeError as exc:
        raise PermanentError(f"undecodable {message_class.__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Encoded[M: Message]:
    """The serialised bytes of an `M` built without building the `M` (`encoded_with_field`)."""

    message: type[M]
    body: bytes


def encoded_with_field[M: Message](head: M, number: int, parts: Sequence[bytes]) -> Encoded[M]:
    """`with_field`, typed as the message it encodes (what a stage's publish takes)."""
    return Encoded(type(head), with_field(head, number, parts))


LENGTH_DELIMITED = 2
"""Protobuf wire type of bytes, strings and embedded messages."""


def with_field(head: Message, number: int, parts: Sequence[bytes]) -> bytes:
    """`head` serialised with the bytes (or embedded message) field `number` set to the concatenation of `parts`.

    A protobuf field may come after the others on the wire ("Message Structure" in the protobuf encoding
    guide: fields in any order), so a message whose large field is left out of `head` is that field's tag,
    length and bytes away from complete. Building it so costs one copy of a 10 MB content instead of three
    (the content joined, copied into the message, serialised). `head` must not set field `number` itself.
    """
    size = sum(len(part) for part in parts)
    return b"".join((head.SerializeToString(), _varint(number << 3 | LENGTH_DELIMITED), _varint(size), *parts))


def length_delimited(number: int, body: bytes) -> bytes:
    """Field `number` holding `body` (bytes, string or an embedded message's serialisation), tag and length included:
    one entry of a repeated field (events/emitter.py builds an EventBatch of serialised events so)."""
    return b"".join((_varint(number << 3 | LENGTH_DELIMITED), _varint(len(body)), body))


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)
