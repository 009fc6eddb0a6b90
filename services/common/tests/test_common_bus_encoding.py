"""A bus message built around its large field is the same message protobuf itself would serialise."""

from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_common.amqp.topology import LARGE_BODY, lane
from kubemta_common.bus_messages import with_field


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=4),
    st.sampled_from([0, 1, 127, 128, 129, 16_383, 16_384, 2_097_151, 2_097_152]),
    st.text(max_size=20),
)
def test_with_field_equals_the_message_serialised_by_protobuf(parts, padding, queue_id) -> None:
    parts = [*parts, b"p" * padding]
    head = message_pb2.AcceptedMessage(
        queue_id=queue_id, sender="a@b.example", recipients=["c@d.example"], trust=message_pb2.TRUST_RELAY_NETWORK
    )
    body = with_field(head, message_pb2.AcceptedMessage.CONTENT_FIELD_NUMBER, parts)
    expected = message_pb2.AcceptedMessage()
    expected.CopyFrom(head)
    expected.content = b"".join(parts)
    assert message_pb2.AcceptedMessage.FromString(body) == expected


def test_an_embedded_job_reads_back_as_the_job() -> None:
    job = message_pb2.DeliveryJob(queue_id="Q", job_id="Q.1", recipients=["x@y.example"], content=b"z" * 70_000)
    head = message_pb2.DeliveryResult(reporter="delivery-worker")
    body = with_field(head, message_pb2.DeliveryResult.JOB_FIELD_NUMBER, [job.SerializeToString()])
    assert message_pb2.DeliveryResult.FromString(body) == message_pb2.DeliveryResult(
        job=job, reporter="delivery-worker"
    )


def test_large_bus_messages_take_the_large_lane_of_content_stages_only() -> None:
    for key in ("inbound", "route", "deliver", "results", "retry.5m"):
        assert lane(key, LARGE_BODY) == key
        assert lane(key, LARGE_BODY + 1) == f"{key}.large"
    for key in ("dsn", "held", "inbound.large", "retry.5m.large", "unknown"):
        assert lane(key, 10 * LARGE_BODY) == key
