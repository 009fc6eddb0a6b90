"""A message of the wrong type for a stage is a type error: mypy refuses it before any pod sees it."""

import textwrap
from pathlib import Path

from mypy import api

SNIPPET = """
from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import subscribe
from kubemta_common.amqp.publisher import BusPublisher
from kubemta_common.bus_messages import encoded_with_field


async def handle_job(job: message_pb2.DeliveryJob) -> None: ...


async def publish(publisher: BusPublisher, job: message_pb2.DeliveryJob, accepted: message_pb2.AcceptedMessage) -> None:
    await publisher.publish(stages.INBOUND, accepted, message_id="ok")
    await publisher.publish(stages.retry(300), job, message_id="ok")
    subscribe(stages.DELIVER, handle_job)
    await publisher.publish(stages.INBOUND, job, message_id="wrong")  # wrong
    await publisher.publish(stages.RESULTS, encoded_with_field(job, 1, [b""]), message_id="wrong")  # wrong
    stages.ROUTE.outgoing(accepted, message_id="wrong")  # wrong
    subscribe(stages.RESULTS, handle_job)  # wrong
"""


def test_mypy_refuses_a_message_of_another_type_and_takes_the_right_one(tmp_path: Path) -> None:
    source = tmp_path / "bus_use.py"
    text = textwrap.dedent(SNIPPET)
    source.write_text(text)
    wrong = [number for number, line in enumerate(text.splitlines(), start=1) if line.endswith("# wrong")]
    out, err, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)])
    lines = sorted({int(line.split(":")[1]) for line in out.splitlines() if line.startswith(str(source))})
    assert len(wrong) == 4 and lines == wrong, out + err
