"""The publisher refuses a body the broker would refuse, before sending it (no channel is ever closed for it)."""

import pytest

from kubemta_common.amqp.publisher import Publisher
from kubemta_common.errors import MessageTooLarge, PermanentError, PublishFailed


class NoBroker:
    """A broker that must not be used: any touch fails the test."""

    @property
    def connected(self) -> bool:
        raise AssertionError("the broker was asked whether it is connected")

    async def publish_channel(self) -> object:
        raise AssertionError("the broker was asked for a channel")


async def test_a_body_over_the_broker_limit_is_refused_as_permanent_without_a_round_trip() -> None:
    publisher = Publisher(NoBroker(), 5.0, max_message_size=1000)  # type: ignore[arg-type]
    with pytest.raises(MessageTooLarge, match="1001 bytes is more than the broker takes") as refused:
        await publisher.publish_raw("inbound", b"x" * 1001, message_id="Q", message_type="t")
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, PublishFailed)
    assert publisher.in_flight == 0


async def test_a_body_at_the_limit_goes_to_the_broker() -> None:
    publisher = Publisher(NoBroker(), 5.0, max_message_size=1000)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="the broker was asked"):
        await publisher.publish_raw("inbound", b"x" * 1000, message_id="Q", message_type="t")
    assert publisher.in_flight == 0
