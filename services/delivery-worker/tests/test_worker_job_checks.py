"""Malformed jobs: a job no producer on the bus makes (no domain, no recipients, a route
without hosts, a host port above 65535) is held on its first delivery, before any
connection, with one error line and `kubemta_jobs_held_total{reason="malformed"}`; the
boundaries of the rules let real jobs through."""

import logging
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.consumer import Handler, subscribe_deliveries
from kubemta_common.errors import PermanentError
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.handler import DeliverHandler
from kubemta_delivery_worker.job_checks import malformation
from kubemta_delivery_worker.transaction import SmtpOptions
from tests.harness.fake_publisher import FakePublisher
from tests.harness.smtp_peer import ScriptedPeer

StartPeer = Callable[..., Awaitable[ScriptedPeer]]
MakeJob = Callable[..., message_pb2.DeliveryJob]
Metric = Callable[..., float]

HOST = message_pb2.RouteHost(hostname="mx1.dest.test", address="192.0.2.1", port=25)

# Each rule: how to break a good job, and the reason the check gives.
RULES: dict[str, tuple[Callable[[message_pb2.DeliveryJob], None], str]] = {
    "no domain": (lambda job: job.ClearField("domain"), "the job has no domain"),
    "no recipients": (lambda job: job.ClearField("recipients"), "the job has no recipients"),
    "no route hosts": (lambda job: job.route.ClearField("hosts"), "the route has no hosts"),
    "port above 65535": (
        lambda job: setattr(job.route.hosts[-1], "port", 70000),
        "route host 2 (mx2.dest.test) has port 70000, outside 0..65535",
    ),
}


def consumed(handler: DeliverHandler) -> Handler:
    """What the consumer of `deliver` calls with a delivery: the stage decodes the job for the handler."""
    return subscribe_deliveries(stages.DELIVER, handler).on_delivery


def incoming(body: bytes, **headers: Any) -> AbstractIncomingMessage:
    return cast(
        AbstractIncomingMessage,
        SimpleNamespace(body=body, message_id="m1", headers=headers, redelivered=False, routing_key="deliver"),
    )


def two_hosts(peer: ScriptedPeer) -> list[message_pb2.RouteHost]:
    return [
        message_pb2.RouteHost(hostname="mx1.dest.test", address=peer.address, port=peer.port),
        message_pb2.RouteHost(hostname="mx2.dest.test", address=peer.address, port=peer.port),
    ]


@pytest.mark.parametrize("rule", RULES)
async def test_a_malformed_job_is_held_before_any_connection(
    rule: str,
    start_peer: StartPeer,
    job: MakeJob,
    options: SmtpOptions,
    publisher: FakePublisher,
    metric: Metric,
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = await start_peer()
    the_job = job(two_hosts(peer), ["a@dest.test"])
    breaks, reason = RULES[rule]
    breaks(the_job)
    handler = consumed(DeliverHandler(Deliverer(options), publisher))
    malformed_before = metric("kubemta_jobs_held_total", reason="malformed")
    poison_before = metric("kubemta_jobs_held_total", reason="poison")

    with (
        caplog.at_level(logging.INFO, logger="kubemta_delivery_worker"),
        pytest.raises(PermanentError, match=re.escape(reason)) as raised,
    ):
        await handler(incoming(the_job.SerializeToString()))

    assert "malformed" not in str(raised.value), "only the worker's own line says malformed (the consumer logs this)"
    assert metric("kubemta_jobs_held_total", reason="malformed") == malformed_before + 1
    assert metric("kubemta_jobs_held_total", reason="poison") == poison_before
    [line] = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert line.getMessage() == f"malformed job Q123TEST.dest.test: {reason}: moving it to held"
    # from the handler's message_context
    assert (line.queue_id, line.job_id) == ("Q123TEST", "Q123TEST.dest.test")  # type: ignore[attr-defined]
    assert peer.connections == 0
    assert publisher.published == [], "held, not deferred: no result goes back to the queue-manager"


async def test_a_malformed_job_returned_too_often_counts_as_malformed(
    job: MakeJob, options: SmtpOptions, publisher: FakePublisher, metric: Metric
) -> None:
    the_job = job([message_pb2.RouteHost(hostname="mx1.dest.test", address="192.0.2.1", port=65536)])
    handler = consumed(DeliverHandler(Deliverer(options), publisher, delivery_limit=3))
    malformed_before = metric("kubemta_jobs_held_total", reason="malformed")
    poison_before = metric("kubemta_jobs_held_total", reason="poison")

    with pytest.raises(PermanentError, match="port 65536"):
        await handler(incoming(the_job.SerializeToString(), **{"x-delivery-count": 5}))

    assert metric("kubemta_jobs_held_total", reason="malformed") == malformed_before + 1
    assert metric("kubemta_jobs_held_total", reason="poison") == poison_before


@pytest.mark.parametrize(
    "host",
    [
        message_pb2.RouteHost(hostname="mx1.dest.test", address="192.0.2.1", port=0),  # the default port
        message_pb2.RouteHost(hostname="mx1.dest.test", address="192.0.2.1", port=65535),
        message_pb2.RouteHost(unix_socket="/run/dovecot/lmtp"),
    ],
    ids=["port 0", "port 65535", "unix socket"],
)
def test_jobs_inside_the_rules_pass(host: message_pb2.RouteHost, job: MakeJob) -> None:
    assert malformation(job([HOST, host])) is None


def test_the_first_broken_host_is_named() -> None:
    bad = message_pb2.RouteHost(address="192.0.2.9", port=65536)
    job = message_pb2.DeliveryJob(
        domain="dest.test", recipients=["a@dest.test"], route=message_pb2.Route(hosts=[HOST, bad, bad])
    )

    assert malformation(job) == "route host 2 (192.0.2.9) has port 65536, outside 0..65535"


async def test_a_good_job_is_delivered(
    start_peer: StartPeer,
    host_of: Callable[[str, ScriptedPeer], message_pb2.RouteHost],
    job: MakeJob,
    options: SmtpOptions,
    publisher: FakePublisher,
    metric: Metric,
) -> None:
    peer = await start_peer()
    handler = consumed(DeliverHandler(Deliverer(options), publisher))
    malformed_before = metric("kubemta_jobs_held_total", reason="malformed")

    await handler(incoming(job([host_of("mx1.dest.test", peer)]).SerializeToString()))

    assert len(peer.messages) == 1
    assert publisher.published == []  # delivered everywhere: the job ends at the worker, no result
    assert metric("kubemta_jobs_held_total", reason="malformed") == malformed_before
