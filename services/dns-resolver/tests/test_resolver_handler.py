"""The `route` consumer: routed jobs go to `deliver`, failures to `results`, and publish errors propagate."""

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages, topology
from kubemta_common.amqp.consumer import subscribe
from kubemta_common.errors import PermanentError, PublishFailed
from kubemta_common.ttl_cache import TtlLruCache
from kubemta_dns_resolver.handler import RouteHandler
from kubemta_dns_resolver.lookup import LookupStatus
from kubemta_dns_resolver.router import CachePolicy, Router
from kubemta_dns_resolver.transports import parse_transports
from tests.harness.fake_events import RecordingEvents
from tests.harness.fake_publisher import FakePublisher


@dataclass
class FakeIncoming:
    body: bytes


def consumed(handler: RouteHandler) -> Callable[[FakeIncoming], Awaitable[None]]:
    """What the consumer of `route` calls with a delivery: the stage decodes it for the handler."""
    on_delivery = subscribe(stages.ROUTE, handler.handle).on_delivery
    return lambda incoming: on_delivery(cast(AbstractIncomingMessage, incoming))


def make_job(domain: str, recipients: list[str]) -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(
        queue_id="Q123",
        job_id=f"Q123.{domain}",
        sender="sender@example.net",
        domain=domain,
        recipients=recipients,
        content=b"Subject: hi\r\n\r\nhello\r\n",
        attempts=2,
    )


def make_handler(fake_dns, publisher, transports="", events=None, checks=None):
    router = Router(
        fake_dns,
        transports=parse_transports(transports),
        relayhost=None,
        delivery_port=2525,
        cache=TtlLruCache(0),
        policy=CachePolicy(),
        rng=random.Random(3),
    )
    return RouteHandler(router, publisher, events=events or RecordingEvents(), checks=checks)


async def test_routed_job_is_published_to_deliver_with_its_route(fake_dns, read_metric):
    fake_dns.add_mx("example.org", [(10, "mx.example.org")])
    fake_dns.add_address("mx.example.org", "A", ["192.0.2.1"])
    publisher = FakePublisher()
    before = read_metric("kubemta_routes_total", source="mx", result="ok")
    job = make_job("example.org", ["a@example.org", "b@example.org"])

    await consumed(make_handler(fake_dns, publisher))(FakeIncoming(job.SerializeToString()))

    assert len(publisher.published) == 1
    sent = publisher.published[0]
    assert (sent.routing_key, sent.message_type, sent.message_id) == (
        topology.DELIVER,
        "kubemta.v1.DeliveryJob",
        "Q123.example.org",
    )
    routed = message_pb2.DeliveryJob.FromString(sent.body)
    assert routed.route.source == "mx"
    assert routed.route.kind == message_pb2.TRANSPORT_KIND_SMTP
    assert [(h.hostname, h.address, h.port, h.preference) for h in routed.route.hosts] == [
        ("mx.example.org", "192.0.2.1", 2525, 10)
    ]
    routed.ClearField("route")
    assert routed == job  # everything else passes through unchanged
    assert read_metric("kubemta_routes_total", source="mx", result="ok") - before == 1


async def test_permanent_failure_is_published_to_results_for_every_recipient(fake_dns, read_metric):
    publisher = FakePublisher()
    before = read_metric("kubemta_routes_total", source="mx", result="permanent")
    job = make_job("nowhere.example", ["a@nowhere.example", "b@nowhere.example"])

    await make_handler(fake_dns, publisher).handle(job)

    assert len(publisher.published) == 1
    sent = publisher.published[0]
    assert (sent.routing_key, sent.message_type) == (topology.RESULTS, "kubemta.v1.DeliveryResult")
    result = message_pb2.DeliveryResult.FromString(sent.body)
    assert result.reporter == "dns-resolver"
    assert result.job.job_id == "Q123.nowhere.example" and result.job.attempts == 2
    assert result.attempted_at.seconds > 0
    assert [r.recipient for r in result.recipients] == ["a@nowhere.example", "b@nowhere.example"]
    for recipient in result.recipients:
        assert recipient.outcome == message_pb2.OUTCOME_PERMANENT
        assert recipient.status == "5.1.2"
        assert recipient.smtp_code == 0
        assert recipient.diagnostic.startswith("Host or domain name not found")
        assert recipient.remote_mta == ""
    assert read_metric("kubemta_routes_total", source="mx", result="permanent") - before == 1


async def test_temporary_failure_is_published_as_temporary(fake_dns, read_metric):
    fake_dns.fail("broken.example", "MX", LookupStatus.SERVFAIL)
    publisher = FakePublisher()
    before = read_metric("kubemta_routes_total", source="mx", result="temporary")

    await make_handler(fake_dns, publisher).handle(make_job("broken.example", ["a@broken.example"]))

    result = message_pb2.DeliveryResult.FromString(publisher.published[0].body)
    assert publisher.published[0].routing_key == topology.RESULTS
    assert [(r.outcome, r.status) for r in result.recipients] == [(message_pb2.OUTCOME_TEMPORARY, "4.4.3")]
    assert read_metric("kubemta_routes_total", source="mx", result="temporary") - before == 1


async def test_transport_route_source_is_recorded(fake_dns, read_metric):
    publisher = FakePublisher()
    before = read_metric("kubemta_routes_total", source="transport", result="ok")
    handler = make_handler(fake_dns, publisher, transports="example.org=smtp:[192.0.2.77]:24")
    await handler.handle(make_job("example.org", ["a@example.org"]))
    routed = message_pb2.DeliveryJob.FromString(publisher.published[0].body)
    assert routed.route.source == "transport"
    assert [(h.address, h.port) for h in routed.route.hosts] == [("192.0.2.77", 24)]
    assert read_metric("kubemta_routes_total", source="transport", result="ok") - before == 1


@pytest.mark.parametrize("domain", ["example.org", "nowhere.example"])
async def test_publish_failure_propagates_so_the_job_is_not_acknowledged(fake_dns, domain):
    fake_dns.add_address("example.org", "A", ["192.0.2.1"])
    publisher = FakePublisher(PublishFailed("no confirm"))
    with pytest.raises(PublishFailed):
        await make_handler(fake_dns, publisher).handle(make_job(domain, [f"a@{domain}"]))


async def test_undecodable_job_is_a_permanent_error(fake_dns):
    publisher = FakePublisher()
    with pytest.raises(PermanentError):
        await consumed(make_handler(fake_dns, publisher))(FakeIncoming(b"\xff\xff not protobuf"))
    assert publisher.published == []


async def test_one_log_line_per_job_with_the_queue_id(fake_dns, caplog):
    """A routed job's INFO line is its `routed` event's; the handler's own line says the same at DEBUG."""
    fake_dns.add_address("example.org", "A", ["192.0.2.1"])
    handler = make_handler(fake_dns, FakePublisher())
    with caplog.at_level("DEBUG", logger="kubemta_dns_resolver.handler"):
        await handler.handle(make_job("example.org", ["a@example.org"]))
        await handler.handle(make_job("nowhere.example", ["a@nowhere.example"]))
    records = [record for record in caplog.records if record.name == "kubemta_dns_resolver.handler"]
    assert len(records) == 2
    assert all(getattr(record, "queue_id", None) == "Q123" for record in records)
    assert "example.org[192.0.2.1]:2525" in records[0].getMessage()
    assert "5.1.2" in records[1].getMessage()
    assert [record.levelname for record in records] == ["DEBUG", "INFO"]
