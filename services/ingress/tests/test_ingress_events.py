"""The ingress' lifecycle events and duplicate check, through a real SMTP server on 127.0.0.1:0 with a fake
publisher, recording events (tests/harness/fake_events.py) and a fake tracker: `received` emitted after the
inbound confirm and before the 250, with every field, its own confirm not awaited; a client's retry answered
with the first queue id."""

import asyncio
import ipaddress
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.config_types import ListenAddress
from kubemta_common.errors import PublishFailed
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.dedup_key import dedup_key
from kubemta_ingress.handler import IngressHandler
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.server import SmtpServer
from tests.harness.fake_events import PublishCountingEvents, RecordingEvents
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import HOSTNAME, RawClient

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")
MESSAGE = b"From: a@example.net\r\nTo: user@example.org\r\nMessage-ID: <m1@example.net>\r\nSubject: t\r\n\r\nHi.\r\n"
NO_ID = b"From: a@example.net\r\nTo: user@example.org\r\nSubject: t\r\n\r\nHi.\r\n"
SENDER = "sender@example.net"
RCPTS = ("user@example.org", "other@example.org")


class Unknown:
    """What a tracker client may answer when it does not know (not a queue id)."""


@dataclass
class FakeTracker:
    answer: object = None
    asked: list[tuple[str, float]] = field(default_factory=list)

    async def first_queue_id(self, dedup_key: str, within: float) -> object:
        self.asked.append((dedup_key, within))
        return self.answer


class UnconfirmedStream(PublishCountingEvents):
    """An event log whose stream never confirms: `record` would wait for ever (the 250 must not wait for it);
    `published_at_emit`: how many messages the publisher had confirmed at each emit."""

    def __init__(self, publisher: FakePublisher, *, service: str = "test") -> None:
        super().__init__(publisher, service=service)
        self.published_at_emit: list[int] = []

    def emit(self, event: events_pb2.LifecycleEvent) -> None:
        self.published_at_emit.append(len(self.publisher.published))
        super().emit(event)

    async def record(self, event: events_pb2.LifecycleEvent) -> bool:
        self.record_calls += 1
        await asyncio.Event().wait()  # no confirm, ever
        return True


@dataclass
class IndexingTracker:
    """A tracker whose index is the `received` events the ingress emitted (each one landed at once)."""

    events: RecordingEvents

    async def first_queue_id(self, dedup_key: str, within: float) -> object:
        for event in self.events.of_kind("received"):
            if event.received.dedup_key == dedup_key:
                return event.queue_id
        return None


@dataclass
class Ingress:
    server: SmtpServer
    publisher: FakePublisher
    events: PublishCountingEvents
    tracker: FakeTracker | IndexingTracker
    clients: list[RawClient] = field(default_factory=list)

    async def send(self, content: bytes = MESSAGE, sender: str = SENDER, rcpts: tuple[str, ...] = RCPTS) -> str:
        """One transaction on a new connection; the final reply to DATA."""
        client = await RawClient.open(self.server.port)
        self.clients.append(client)
        client.greeting = await client.read_reply()
        assert (await client.last("EHLO client.example")).startswith("250 ")
        assert (await client.last(f"MAIL FROM:<{sender}>")).startswith("250 ")
        for rcpt in rcpts:
            assert (await client.last(f"RCPT TO:<{rcpt}>")).startswith("250 ")
        assert (await client.last("DATA")).startswith("354 ")
        await client.send(content + b".\r\n")
        return (await client.read_reply())[-1]


@pytest.fixture
async def ingress() -> AsyncIterator[Ingress]:
    built: list[Ingress] = []

    async def start(
        *, window: float = 3600.0, tracker: FakeTracker | None = None, recorded: bool | None = None, index: bool = False
    ) -> Ingress:
        """`recorded` None: a stream that never confirms; `index`: a tracker that knows what was emitted."""
        publisher = FakePublisher()
        events: PublishCountingEvents
        if recorded is None:
            events = UnconfirmedStream(publisher, service="ingress")
        else:
            events = PublishCountingEvents(publisher, recorded=recorded, service="ingress")
        answers: FakeTracker | IndexingTracker = IndexingTracker(events) if index else (tracker or FakeTracker())
        handler = IngressHandler(
            MailAcceptance(
                hostname=HOSTNAME,
                policy=RelayPolicy.create(("example.org",), [ipaddress.ip_network("127.0.0.0/8")]),
                max_recipients=100,
                max_message_size=1_000_000,
                publisher=publisher,
                events=events,
                tracker=answers,
                duplicate_window=window,
            )
        )
        server = SmtpServer(
            handler, listen=ListenAddress("127.0.0.1", 0), hostname=HOSTNAME, max_message_size=1_000_000, timeout=10
        )
        await server.start()
        one = Ingress(server, publisher, events, answers)
        built.append(one)
        return one

    yield start  # type: ignore[misc]
    for one in built:
        for client in one.clients:
            await client.close()
        await one.server.stop(drain_seconds=1.0)


def accepted(ingress: Ingress, index: int = -1) -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage.FromString(ingress.publisher.published[index].body)


def duplicates() -> float:
    return REGISTRY.get_sample_value("kubemta_duplicates_total", {"stage": "ingress"}) or 0.0


def queued_as(reply: str) -> str:
    """The queue id a 250 reply names."""
    match = QUEUED.match(reply)
    assert match is not None, reply
    return match[1]


async def test_accepted_message_carries_message_id_listener_and_dedup_key(ingress):
    one = await ingress()
    reply = await one.send()
    queue_id = queued_as(reply)
    message = accepted(one)
    assert message.queue_id == queue_id
    assert message.message_id == "<m1@example.net>"
    assert message.listener == "smtp"
    assert message.dedup_key == dedup_key("<m1@example.net>", SENDER, list(RCPTS), MESSAGE)


async def test_received_is_emitted_after_the_confirm_with_every_field(ingress):
    one = await ingress()
    reply = await one.send()  # the stream never confirms: the 250 does not wait for the event's confirm
    queue_id = queued_as(reply)
    assert one.events.kinds() == ["received"]
    assert isinstance(one.events, UnconfirmedStream)
    assert one.events.published_at_emit == [1]  # the inbound publish was confirmed before the emit
    assert one.events.record_calls == 0
    event = one.events.events[0]
    message = accepted(one)
    assert event.queue_id == queue_id and event.message_id == "<m1@example.net>"
    received = event.received
    assert received.sender == SENDER
    assert list(received.recipients) == list(RCPTS)
    assert received.size == len(message.content)  # the message as queued, trace header included
    assert received.client_address == "127.0.0.1"
    assert received.client_helo == "client.example"
    assert received.authenticated_user == ""
    assert received.trust == message_pb2.TRUST_RELAY_NETWORK
    assert received.arrival_time == message.arrival_time
    assert event.time == message.arrival_time  # in a timeline it comes before what the queue-manager did with it
    assert received.headers == MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n"
    assert received.dedup_key == message.dedup_key
    assert received.listener == "smtp"
    assert not received.generated


async def test_a_retry_after_the_received_event_landed_is_recognised(ingress):
    one = await ingress(index=True)
    first = queued_as(await one.send())
    assert queued_as(await one.send()) == first
    assert len(one.publisher.published) == 1
    assert one.events.kinds() == ["received", "duplicate"]


async def test_an_unconfirmed_event_still_gets_250(ingress):
    one = await ingress(recorded=False)
    assert QUEUED.match(await one.send())
    assert one.events.kinds() == ["received"] and len(one.publisher.published) == 1


async def test_no_received_event_without_the_inbound_confirm(ingress):
    one = await ingress()
    one.publisher.error = PublishFailed("no confirm")
    reply = await one.send()
    assert reply.startswith("451 4.3.0")
    assert one.events.events == []


async def test_an_accepted_message_is_logged_by_its_received_event_alone(ingress, caplog):
    """The ingress wrote an `accepted` line beside the `received` event's line, which says all it said (sender,
    recipients, size, client, HELO, Message-ID, listener, user): one line per message, as Postfix's smtpd
    writes one per queued message."""
    one = await ingress()
    with caplog.at_level(logging.INFO):
        queue_id = queued_as(await one.send())
    own_lines = [r.getMessage() for r in caplog.records if r.name.startswith("kubemta_ingress")]
    assert own_lines == []
    assert one.events.kinds() == ["received"]
    event = one.events.events[0]
    assert (event.queue_id, event.message_id, event.received.listener) == (queue_id, "<m1@example.net>", "smtp")
    assert (event.received.sender, event.received.client_helo) == (SENDER, "client.example")


async def test_a_client_retry_gets_the_first_queue_id_and_is_not_queued(ingress):
    tracker = FakeTracker(answer="FirstQueueId0001")
    one = await ingress(tracker=tracker, window=600.0)
    before = duplicates()
    reply = await one.send()
    assert reply == "250 2.0.0 Ok: queued as FirstQueueId0001"
    assert one.publisher.published == []
    assert tracker.asked == [(dedup_key("<m1@example.net>", SENDER, list(RCPTS), MESSAGE), 600.0)]
    assert one.events.kinds() == ["duplicate"]
    event = one.events.events[0]
    assert event.queue_id == "FirstQueueId0001" and event.message_id == "<m1@example.net>"
    assert event.duplicate.reason == "client-retry"
    assert event.duplicate.first_queue_id == "FirstQueueId0001"
    assert list(event.duplicate.recipients) == list(RCPTS)
    assert duplicates() == before + 1


@pytest.mark.parametrize("answer", [None, "", Unknown()])
async def test_a_tracker_that_does_not_know_lets_the_message_through(ingress, answer):
    tracker = FakeTracker(answer=answer)
    one = await ingress(tracker=tracker)
    assert QUEUED.match(await one.send())
    assert len(one.publisher.published) == 1 and len(tracker.asked) == 1
    assert one.events.kinds() == ["received"]


@pytest.mark.parametrize(
    "answer", ["abc\r\n250 2.0.0 Ok: queued as evil", "a b", "x" * 65, "<script>", "queue\0id", "ü" * 4]
)
async def test_a_tracker_answer_that_is_not_a_queue_id_never_reaches_the_reply(ingress, answer):
    one = await ingress(tracker=FakeTracker(answer=answer))
    reply = await one.send()
    queue_id = queued_as(reply)
    assert queue_id == accepted(one).queue_id
    assert len(one.publisher.published) == 1


async def test_no_message_id_means_no_duplicate_check(ingress):
    tracker = FakeTracker(answer="FirstQueueId0001")
    one = await ingress(tracker=tracker)
    assert QUEUED.match(await one.send(NO_ID))
    assert tracker.asked == []
    message = accepted(one)
    assert message.dedup_key == "" and one.events.events[0].received.dedup_key == ""
    # a trusted client's message gets the Message-ID the MSA adds (RFC 6409 section 8), and it travels on the bus
    assert message.message_id.startswith(f"<{message.queue_id}@")
    assert one.events.events[0].message_id == message.message_id


async def test_a_window_of_zero_turns_the_check_off(ingress):
    tracker = FakeTracker(answer="FirstQueueId0001")
    one = await ingress(tracker=tracker, window=0.0)
    assert QUEUED.match(await one.send())
    assert tracker.asked == [] and len(one.publisher.published) == 1


async def test_different_envelope_or_body_asks_with_a_different_key(ingress):
    tracker = FakeTracker()
    one = await ingress(tracker=tracker)
    await one.send()
    await one.send(MESSAGE + b"more\r\n")
    await one.send(sender="someone@example.net")
    await one.send(rcpts=("user@example.org",))
    keys = [key for key, _ in tracker.asked]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert len(one.publisher.published) == 4


async def test_hostile_message_ids_are_bounded_in_the_message_and_the_event(ingress):
    one = await ingress()
    content = b"Message-ID: <" + (b"a" * 900 + b"\r\n\t") * 6 + b"@x>\r\nSubject: s\r\n\r\nbody\r\n"
    assert QUEUED.match(await one.send(content))  # lines under 1000 octets, folded: the ingress takes it
    message = accepted(one)
    assert len(message.message_id) == 998 and "\r" not in message.message_id and "\n" not in message.message_id
    assert one.events.events[0].message_id == message.message_id
