"""Decoding bus payloads: a payload that is not the expected protobuf message is a
permanent error (the consumer rejects it to `held`, where an operator can look at it)."""

from google.protobuf.message import DecodeError, Message

from kubemta_common.errors import PermanentError


def decode[M: Message](message_class: type[M], payload: bytes) -> M:
    """Parse `payload` as `message_class`, raising PermanentError when it is not one."""
    try:
        return message_class.FromString(payload)
    except DecodeError as exc:
        raise PermanentError(f"undecodable {message_class.__name__}: {exc}") from None
