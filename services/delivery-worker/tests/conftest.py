"""Fixtures for the delivery-worker tests: loopback addresses, a self-signed certificate,
fast SMTP options, job factories and a fake publisher."""

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.tls import opportunistic_tls_context
from kubemta_delivery_worker.transaction import SmtpOptions
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ports import free_port, random_loopback_net
from tests.harness.smtp_peer import ScriptedPeer, make_self_signed_cert

EHLO_NAME = "worker.kubemta.test"


@pytest.fixture(scope="session")
def _loopback_net() -> str:
    return random_loopback_net()


@pytest.fixture
def loopback(_loopback_net: str) -> Iterator[Callable[[], str]]:
    """Fresh loopback addresses (127.a.b.c), one per call, unique within the run."""
    counter = _ADDRESSES
    yield lambda: f"{_loopback_net}.{next(counter)}"


_ADDRESSES = itertools.cycle(range(2, 251))


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"), "mx.peer.test")


@pytest.fixture
def options() -> SmtpOptions:
    return SmtpOptions(
        ehlo_name=EHLO_NAME,
        tls_context=opportunistic_tls_context(),
        connect_timeout=2.0,
        command_timeout=5.0,
        data_timeout=5.0,
    )


@pytest.fixture
def refused_host(loopback: Callable[[], str]) -> Callable[[str], message_pb2.RouteHost]:
    """A route host where nothing listens: connections to it are refused."""

    def make(name: str) -> message_pb2.RouteHost:
        address = loopback()
        return message_pb2.RouteHost(hostname=name, address=address, port=free_port(address))

    return make


def peer_host(name: str, peer: ScriptedPeer) -> message_pb2.RouteHost:
    return message_pb2.RouteHost(hostname=name, address=peer.address, port=peer.port)


@pytest.fixture
def host_of() -> Callable[[str, ScriptedPeer], message_pb2.RouteHost]:
    """Route host `name` pointing at a peer."""
    return peer_host


CONTENT = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello.\r\n"


def make_job(
    hosts: Sequence[message_pb2.RouteHost],
    recipients: Sequence[str] = ("user@dest.test",),
    *,
    sender: str = "alice@sender.test",
    content: bytes = CONTENT,
    smtputf8: bool = False,
    attempts: int = 2,
) -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(
        queue_id="Q123TEST",
        job_id="Q123TEST.dest.test",
        sender=sender,
        domain="dest.test",
        recipients=list(recipients),
        content=content,
        attempts=attempts,
        smtputf8=smtputf8,
        route=message_pb2.Route(kind=message_pb2.TRANSPORT_KIND_SMTP, hosts=list(hosts), provider="other", source="mx"),
    )


@pytest.fixture
def job() -> Callable[..., message_pb2.DeliveryJob]:
    """The job factory `make_job(hosts, recipients, sender=, content=, smtputf8=)`."""
    return make_job


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


def sample(name: str, **labels: str) -> float:
    """The current value of a metric sample (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metric() -> Callable[..., float]:
    """`metric(name, **labels)`: the current value of a sample."""
    return sample


@pytest.fixture
async def start_peer(loopback: Callable[[], str]) -> AsyncIterator[Callable[..., Awaitable[ScriptedPeer]]]:
    """`await start_peer(**ScriptedPeer options)`: a running peer on a fresh loopback address, stopped afterwards."""
    peers: list[ScriptedPeer] = []

    async def start(**kwargs: Any) -> ScriptedPeer:
        peer = ScriptedPeer(loopback(), 0, **kwargs)
        await peer.start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        await peer.stop()
