"""The `dsn` stage: one DSN per message and event, sent before any of its requests is acknowledged."""

import asyncio
import logging
from collections.abc import Sequence

import pytest
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_common.amqp.stages import Outgoing, Stage
from kubemta_common.amqp.topology import DSN, INBOUND
from kubemta_common.bus_messages import Encoded
from kubemta_common.errors import PermanentError, PublishFailed
from kubemta_common.logs import message_context
from kubemta_queue_manager.dsn_batcher import DsnBatcher
from kubemta_queue_manager.dsn_requests import MAX_ORIGINAL_HEADERS, header_block
from tests.harness.dsn_reader import read_dsn
from tests.harness.fake_events import RecordingEvents

HOSTNAME = "mx.kubemta.test"
NEVER = 3600.0  # a window no test waits for: what is sent early is sent for another reason
WAIT = 10.0  # bound on every wait in these tests


class Recorder:
    """Confirms what it is given (or fails once on demand), and lets a test hold a publish."""

    def __init__(self) -> None:
        self.sent: list[message_pb2.AcceptedMessage] = []
        self.fail: Exception | None = None
        self.release = asyncio.Event()
        self.release.set()

    async def publish[M: Message](self, stage: Stage[M], message: M | Encoded[M], *, message_id: str) -> None:
        await self.publish_all([stage.outgoing(message, message_id=message_id)])

    async def publish_all(self, messages: Sequence[Outgoing]) -> None:
        await self.release.wait()
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        for outgoing in messages:
            assert (outgoing.routing_key, outgoing.message_type) == (INBOUND, "kubemta.v1.AcceptedMessage")
            message = message_pb2.AcceptedMessage.FromString(outgoing.body)
            assert outgoing.message_id == message.queue_id
            self.sent.append(message)


def request(
    queue_id: str, *rcpts: str, action: "message_pb2.DsnAction.ValueType" = message_pb2.DSN_ACTION_FAILED
) -> message_pb2.DsnRequest:
    made = message_pb2.DsnRequest(
        queue_id=queue_id,
        sender="alice@example.com",
        action=action,
        recipients=[
            message_pb2.DsnRecipient(recipient=r, status="5.1.1", smtp_code=550, diagnostic="unknown") for r in rcpts
        ],
        original_headers=b"From: alice@example.com\r\nSubject: hi\r\n\r\n",
        job_id=f"{queue_id}.{rcpts[0].partition('@')[2]}",
    )
    made.arrival_time.FromSeconds(1_700_000_000)
    made.last_attempt.FromSeconds(1_700_000_100)
    return made


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def reported(dsn: message_pb2.AcceptedMessage) -> list[str]:
    text = dsn.content.decode()
    return [line.split(";", 1)[1].strip() for line in text.splitlines() if line.startswith("Final-Recipient:")]


async def test_the_requests_of_one_message_from_three_domains_make_one_dsn() -> None:
    publisher = Recorder()
    batcher = DsnBatcher(publisher, HOSTNAME, window=0.2, max_held=100)
    bounces = counted("kubemta_bounces_sent_total")
    async with asyncio.timeout(WAIT):
        await asyncio.gather(
            batcher.add(request("Q1", "bob@one.example")),
            batcher.add(request("Q1", "carol@two.example", "dave@two.example")),
            batcher.add(request("Q1", "erin@three.example")),
        )
    (dsn,) = publisher.sent
    assert reported(dsn) == ["bob@one.example", "carol@two.example", "dave@two.example", "erin@three.example"]
    assert list(dsn.recipients) == ["alice@example.com"] and dsn.sender == "" and dsn.generated
    assert counted("kubemta_bounces_sent_total") == bounces + 1
    assert batcher.held == 0


async def test_messages_and_events_are_kept_apart() -> None:
    publisher = Recorder()
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=100)
    waiting = [
        asyncio.ensure_future(batcher.add(request("Q1", "bob@one.example"))),
        asyncio.ensure_future(batcher.add(request("Q1", "bob@one.example", action=message_pb2.DSN_ACTION_DELAYED))),
        asyncio.ensure_future(batcher.add(request("Q2", "bob@one.example"))),
    ]
    await asyncio.sleep(0)
    assert batcher.held == 3 and publisher.sent == []  # nothing goes before its window (or a flush)
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*waiting)
    subjects = sorted((dsn.content.split(b"Subject: ")[1].split(b"\r\n")[0]).decode() for dsn in publisher.sent)
    assert subjects == [
        "Delayed Mail (still being retried)",
        "Undelivered Mail Returned to Sender",
        "Undelivered Mail Returned to Sender",
    ]


async def test_a_recipient_reported_twice_is_listed_once() -> None:
    publisher = Recorder()
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=100)
    waiting = [asyncio.ensure_future(batcher.add(request("Q1", "bob@one.example"))) for _ in range(2)]
    await asyncio.sleep(0)
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*waiting)
    (dsn,) = publisher.sent
    assert reported(dsn) == ["bob@one.example"]


async def test_a_failed_publish_returns_every_request_and_the_next_ones_start_a_new_group() -> None:
    publisher = Recorder()
    publisher.fail = PublishFailed("no confirm from the broker within 10s")
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=100)
    waiting = [asyncio.ensure_future(batcher.add(request("Q1", f"r{n}@one.example"))) for n in range(2)]
    await asyncio.sleep(0)
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(result) for result in results] == [PublishFailed, PublishFailed]  # not acknowledged: redelivered
    again = asyncio.ensure_future(batcher.add(request("Q1", "r0@one.example")))
    await asyncio.sleep(0)
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        await again
    assert [reported(dsn) for dsn in publisher.sent] == [["r0@one.example"]]


async def test_reaching_the_limit_sends_the_oldest_group_at_once() -> None:
    publisher = Recorder()
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=3)
    oldest = asyncio.ensure_future(batcher.add(request("Q1", "a@one.example")))
    second = asyncio.ensure_future(batcher.add(request("Q2", "b@one.example")))
    await asyncio.sleep(0)
    third = asyncio.ensure_future(batcher.add(request("Q2", "c@two.example")))  # the third held request
    async with asyncio.timeout(WAIT):
        await oldest
    assert [reported(dsn) for dsn in publisher.sent] == [["a@one.example"]]
    assert not second.done() and not third.done()
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(second, third)


async def test_a_cancelled_request_does_not_cancel_its_group() -> None:
    publisher = Recorder()
    publisher.release.clear()
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=100)
    first = asyncio.ensure_future(batcher.add(request("Q1", "a@one.example")))
    second = asyncio.ensure_future(batcher.add(request("Q1", "b@two.example")))
    await asyncio.sleep(0)
    batcher.flush_all()
    first.cancel()  # the drain cut this handler: its request is redelivered, the DSN still goes out
    publisher.release.set()
    async with asyncio.timeout(WAIT):
        await second
    (dsn,) = publisher.sent
    assert reported(dsn) == ["a@one.example", "b@two.example"]


async def test_the_results_handler_publishes_requests_and_the_dsn_handler_refuses_empty_ones(kit, manager, publisher):
    job = kit.job(["bob@example.org", "carol@example.org"])
    job.message_id = "<invoice-7@app.example>"
    result = kit.result(job, [kit.bounced("bob@example.org"), kit.bounced("carol@example.org")])
    await manager.handle_result(result)
    ((key, body, message_id, kind),) = publisher.published
    assert (key, message_id, kind) == (DSN, f"{job.job_id}#0:failed", "kubemta.v1.DsnRequest")
    sent = message_pb2.DsnRequest.FromString(body)
    assert [r.recipient for r in sent.recipients] == ["bob@example.org", "carol@example.org"]
    assert sent.original_headers == header_block(job.content)
    assert sent.message_id == "<invoice-7@app.example>"  # for the dsn_sent event on the original message
    for empty in (message_pb2.DsnRequest(), message_pb2.DsnRequest(queue_id="Q", sender="a@b.example")):
        with pytest.raises(PermanentError):
            await manager.handle_dsn_request(empty)


def test_the_original_headers_are_cut_at_a_line_within_the_bound() -> None:
    huge = b"".join(f"X-Filler-{n}: {'y' * 70}\r\n".encode() for n in range(2000)) + b"\r\nbody\r\n"
    block = header_block(huge)
    assert len(block) <= MAX_ORIGINAL_HEADERS and block.endswith(b"\r\n") and b"body" not in block
    assert header_block(b"Subject: a\r\n\r\nbody") == b"Subject: a\r\n\r\n"
    assert header_block(b"Subject: no body at all\r\n") == b"Subject: no body at all\r\n"


async def test_a_flush_another_message_triggers_logs_the_flushed_message_s_queue_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The flush task is started by Q2's request (the held limit), but it sends Q1's DSN: it logs Q1, not Q2."""
    publisher = Recorder()
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=2)

    async def handle(dsn_request: message_pb2.DsnRequest) -> None:
        with message_context(dsn_request.queue_id, dsn_request.job_id):  # as QueueManager.handle_dsn_request
            await batcher.add(dsn_request)

    with caplog.at_level(logging.DEBUG, logger="kubemta_queue_manager.dsn_batcher"):
        oldest = asyncio.ensure_future(handle(request("Q1", "a@one.example")))
        await asyncio.sleep(0)
        newest = asyncio.ensure_future(handle(request("Q2", "b@one.example")))  # reaches max_held: Q1 is sent
        async with asyncio.timeout(WAIT):
            await oldest
        batcher.flush_all()
        async with asyncio.timeout(WAIT):
            await newest

    sent = [record for record in caplog.records if "notification" in record.getMessage()]
    assert [(record.queue_id, record.job_id) for record in sent] == [("Q1", None), ("Q2", None)]  # type: ignore[attr-defined]


def success(queue_id: str, rcpt: str, action: "message_pb2.DsnAction.ValueType") -> message_pb2.DsnRequest:
    made = request(queue_id, rcpt, action=action)
    made.recipients[0].status, made.recipients[0].smtp_code, made.recipients[0].diagnostic = "2.0.0", 250, "Ok"
    return made


async def test_delivered_and_relayed_of_one_message_make_one_success_report_apart_from_its_bounce() -> None:
    publisher = Recorder()
    events = RecordingEvents(service="queue-manager")
    batcher = DsnBatcher(publisher, HOSTNAME, window=NEVER, max_held=100, events=events)
    sent = counted("kubemta_success_dsns_sent_total")
    bounces = counted("kubemta_bounces_sent_total")
    waiting = [
        asyncio.ensure_future(batcher.add(success("Q1", "bob@one.example", message_pb2.DSN_ACTION_DELIVERED))),
        asyncio.ensure_future(batcher.add(success("Q1", "carol@two.example", message_pb2.DSN_ACTION_RELAYED))),
        asyncio.ensure_future(batcher.add(request("Q1", "dave@three.example"))),
    ]
    await asyncio.sleep(0)
    batcher.flush_all()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*waiting)

    [report] = [dsn for dsn in publisher.sent if b"Successful Mail Delivery Report" in dsn.content]
    read = read_dsn(report.content)
    assert [dict(block)["Action"] for block in read.recipient_blocks] == ["delivered", "relayed"]
    assert len(publisher.sent) == 2
    assert counted("kubemta_success_dsns_sent_total") == sent + 1
    assert counted("kubemta_bounces_sent_total") == bounces + 1
    actions = sorted(message_pb2.DsnAction.Name(event.dsn_sent.action) for event in events.of_kind("dsn_sent"))
    assert actions == ["DSN_ACTION_DELIVERED", "DSN_ACTION_FAILED"]
