"""The LMTP prober's cache (recipient_probes.py): positive and negative TTLs, its size bound, and shutdown,
against a real LMTP server (tests/harness/lmtp_peer.py) with a clock the test moves."""

import asyncio
from collections.abc import AsyncIterator

import dns.asyncresolver
import pytest

from kubemta_common.transport_map import Nexthop
from kubemta_ingress.lmtp_connect import LmtpConnector
from kubemta_ingress.lmtp_probe import ProbeStatus, UnsendableAddress
from kubemta_ingress.recipient_probes import ProbeLimits, RecipientProber
from tests.harness.ingress_kit import eventually
from tests.harness.lmtp_peer import LmtpPeer
from tests.harness.ports import random_loopback_net


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def peer() -> AsyncIterator[LmtpPeer]:
    async with LmtpPeer(f"{random_loopback_net()}.24", users={"alice", "bob"}) as started:
        yield started


def prober_for(clock: Clock, **limits: float) -> RecipientProber:
    resolver = dns.asyncresolver.Resolver(configure=False)  # never asked: the next hops are IP addresses
    settings = ProbeLimits(**{"positive_ttl": 60.0, "negative_ttl": 10.0, "timeout": 5.0, **limits})  # type: ignore[arg-type]
    return RecipientProber(LmtpConnector(resolver), helo="mx.kubemta.test", limits=settings, clock=clock)


def hop(peer: LmtpPeer) -> Nexthop:
    return Nexthop(peer.address, peer.port, mx_lookup=False)


async def test_known_answers_live_for_the_positive_ttl_and_unknown_ones_for_the_negative(peer: LmtpPeer) -> None:
    clock = Clock()
    prober = prober_for(clock)
    assert (await prober.check(hop(peer), "alice@example.org")).status is ProbeStatus.KNOWN
    assert (await prober.check(hop(peer), "nobody@example.org")).status is ProbeStatus.UNKNOWN
    assert peer.connections == 2

    clock.now += 9.0
    await prober.check(hop(peer), "alice@example.org")
    await prober.check(hop(peer), "nobody@example.org")
    assert peer.connections == 2  # both cached

    clock.now += 1.0  # the negative TTL is over, the positive one is not
    await prober.check(hop(peer), "alice@example.org")
    await prober.check(hop(peer), "nobody@example.org")
    assert peer.connections == 3

    clock.now += 50.0
    await prober.check(hop(peer), "alice@example.org")
    assert peer.connections == 4


async def test_the_cache_holds_at_most_its_size(peer: LmtpPeer) -> None:
    prober = prober_for(Clock(), cache_size=1)
    for address in ("alice@example.org", "bob@example.org", "alice@example.org", "alice@example.org"):
        await prober.check(hop(peer), address)
    assert peer.connections == 3  # bob pushed alice out; then alice stayed


async def test_a_zero_ttl_or_size_caches_nothing(peer: LmtpPeer) -> None:
    for limits in ({"positive_ttl": 0.0}, {"cache_size": 0}):
        before = peer.connections
        prober = prober_for(Clock(), **limits)
        await prober.check(hop(peer), "alice@example.org")
        await prober.check(hop(peer), "alice@example.org")
        assert peer.connections == before + 2


async def test_an_unsendable_address_is_never_sent(peer: LmtpPeer) -> None:
    prober = prober_for(Clock())
    with pytest.raises(UnsendableAddress):
        await prober.check(hop(peer), "alice\r\nRSET@example.org")
    assert peer.connections == 0


async def test_close_ends_the_probes_still_running(peer: LmtpPeer) -> None:
    prober = prober_for(Clock(), timeout=30.0)
    peer.gate.clear()
    waiting = asyncio.create_task(prober.check(hop(peer), "alice@example.org"))
    await eventually(lambda: peer.in_rcpt == 1)
    await prober.close()
    result = await asyncio.wait_for(waiting, 5)
    assert result.status is ProbeStatus.TEMPFAIL
