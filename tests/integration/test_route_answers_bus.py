"""Route answers on a real RabbitMQ: the resolver appends its answer to the `routes` stream, a queue-manager
reading the stream sends the next message's job to that domain straight to `deliver` with the route, and a
stale answer sends it to `route` as ever."""

import asyncio
import random
import time

import pytest
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_common.amqp.broker import Broker
from kubemta_common.amqp.publisher import Publisher
from kubemta_common.amqp.streams import ROUTES
from kubemta_common.amqp.topology import DELIVER, ROUTE
from kubemta_common.route_answer_log import RouteAnswerLog
from kubemta_common.route_answers import ANSWER_TYPE, RouteAnswers, answer_record
from kubemta_common.route_shortcut import RouteAnswerFollower
from kubemta_common.transport_map import parse_transports
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.handler import RouteHandler
from kubemta_dns_resolver.router import CachePolicy, Router
from kubemta_queue_manager.handlers import QueueManager
from kubemta_queue_manager.settings import QueueManagerSettings
from tests.harness.fake_events import RecordingEvents
from tests.harness.queues import take_all
from tests.harness.rabbitmq import Vhost

pytestmark = pytest.mark.broker

TRANSPORTS = "example.org=smtp:[192.0.2.10]:2525;stale.example=smtp:[192.0.2.11]:2525"


class NoDns:
    """The router never asks DNS for these static routes."""

    async def mx(self, name: str) -> object:
        raise AssertionError("no DNS expected")

    async def addresses(self, name: str, rdtype: str) -> object:
        raise AssertionError("no DNS expected")


def accepted(queue_id: str, recipient: str) -> message_pb2.AcceptedMessage:
    return message_pb2.AcceptedMessage(
        queue_id=queue_id, sender="alice@example.com", recipients=[recipient], content=b"Subject: x\r\n\r\nx\r\n"
    )


async def until(condition, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a background stream reader fills the map, bounded
            await asyncio.sleep(0.05)


async def test_a_resolver_answer_sends_the_next_job_straight_to_deliver_and_a_stale_one_to_route(
    vhost: Vhost, broker: Broker
) -> None:
    publisher = Publisher(broker, 10)
    answers_log = RouteAnswerLog()
    answers_log.start(publisher)
    router = Router(
        NoDns(),  # type: ignore[arg-type]
        transports=parse_transports(TRANSPORTS),
        relayhost=None,
        delivery_port=25,
        cache=TtlLruCache(100),
        policy=CachePolicy(),
        rng=random.Random(1),
        answers=answers_log,
        static_answer_ttl=60,
    )
    resolver = RouteHandler(router, publisher, events=RecordingEvents(service="dns-resolver"))
    answers = RouteAnswers()
    follower = RouteAnswerFollower(broker, answers)
    follower.start()
    settings = QueueManagerSettings(amqp_url=SecretStr(vhost.url), hostname="mx.kubemta.test")
    events = RecordingEvents(service="queue-manager")
    manager = QueueManager(settings, publisher, events=events, route_answers=answers)
    try:
        # the first message to example.org goes through the resolver, which appends its answer
        await manager.handle_accepted(accepted("Q1", "bob@example.org"))
        (first,) = [message_pb2.DeliveryJob.FromString(body) for body in await take_all(vhost.url, ROUTE)]
        await resolver.handle(first)
        assert len(await take_all(vhost.url, DELIVER)) == 1
        await until(lambda: answers.lookup("example.org", time.time())[1] == "used")

        # the next one goes straight to deliver, with the resolver's route
        await manager.handle_accepted(accepted("Q2", "carol@example.org"))
        assert await take_all(vhost.url, ROUTE) == []
        (direct,) = [message_pb2.DeliveryJob.FromString(body) for body in await take_all(vhost.url, DELIVER)]
        assert direct.queue_id == "Q2" and direct.attempts == 0
        assert [(host.address, host.port) for host in direct.route.hosts] == [("192.0.2.10", 2525)]
        assert direct.route.source == "transport"
        assert "routed" in events.kinds()

        # an answer whose lifetime has passed: the job goes to route
        old = answer_record("stale.example", first.route, now=time.time() - 120, fresh_for=30)
        await publisher.publish_raw(ROUTES, old.SerializeToString(), message_id="old", message_type=ANSWER_TYPE)
        await until(lambda: len(answers) == 2)
        await manager.handle_accepted(accepted("Q3", "dave@stale.example"))
        (routed,) = [message_pb2.DeliveryJob.FromString(body) for body in await take_all(vhost.url, ROUTE)]
        assert routed.queue_id == "Q3" and not routed.HasField("route")
        assert await take_all(vhost.url, DELIVER) == []
    finally:
        await follower.stop()
        await answers_log.close()
