"""Per-destination concurrency and back-off against real SMTP peers: the limit holds at
the peer, a 421 or 4.7.x rate-limit reply defers the job and pauses the destination (the
next job is deferred without connecting), and a full destination defers after a bounded wait."""

import asyncio

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.destinations import Destinations, destination_of, throttle_of

DELIVERED = message_pb2.OUTCOME_DELIVERED
TEMPORARY = message_pb2.OUTCOME_TEMPORARY


def limits(concurrency: int = 20, backoff: float = 60.0, wait: float = 60.0) -> Destinations:
    return Destinations(concurrency=concurrency, backoff_seconds=backoff, wait_seconds=wait)


async def test_never_more_than_the_limit_at_once_at_the_peer(start_peer, host_of, job, options):
    peer = await start_peer(data_delay=0.3)
    deliverer = Deliverer(options, destinations=limits(concurrency=3))
    host = host_of("mx1.dest.test", peer)

    results = await asyncio.gather(*(deliverer.deliver(job([host], [f"u{i}@dest.test"])) for i in range(8)))

    assert [r.outcome for [r] in results] == [DELIVERED] * 8
    assert peer.max_in_data == 3


async def test_other_destinations_are_not_held_back(start_peer, host_of, job, options):
    peer = await start_peer(data_delay=0.3)
    destinations = limits(concurrency=1)
    deliverer = Deliverer(options, destinations=destinations)
    host = host_of("mx1.dest.test", peer)
    other = job([host], ["x@other.test"])
    other.domain = "other.test"

    await asyncio.gather(deliverer.deliver(job([host])), deliverer.deliver(other))

    assert peer.max_in_data == 2


async def test_421_defers_the_job_and_pauses_the_destination(start_peer, host_of, job, options, metric):
    peer = await start_peer(mail_reply=["421 4.7.0 Too many messages, slow down", "250 2.1.0 Ok"])
    backup = await start_peer()
    deliverer = Deliverer(options, destinations=limits(backoff=60))
    hosts = [host_of("mx1.dest.test", peer), host_of("mx2.dest.test", backup)]
    backoffs_before = metric("kubemta_destination_backoffs_total")

    [first] = await deliverer.deliver(job(hosts, ["a@dest.test"]))
    [second] = await deliverer.deliver(job(hosts, ["b@dest.test"]))

    assert first.outcome == TEMPORARY
    assert first.smtp_code == 421
    assert first.status == "4.7.0"
    assert backup.connections == 0, "a host asking us to slow down ends the attempt: no hammering the next MX"
    assert metric("kubemta_destination_backoffs_total") == backoffs_before + 1
    assert second.outcome == TEMPORARY
    assert second.diagnostic.startswith("delivery temporarily suspended for ")
    assert "421 4.7.0 Too many messages, slow down" in second.diagnostic
    assert peer.connections == 1, "deferred without connecting"
    assert peer.messages == []


async def test_after_the_backoff_the_destination_starts_again_at_one(start_peer, host_of, job, options):
    peer = await start_peer(rules={"a": "421 4.7.0 Try again later"}, data_delay=0.2)
    destinations = limits(concurrency=5, backoff=0.3)
    deliverer = Deliverer(options, destinations=destinations)
    host = host_of("mx1.dest.test", peer)

    [first] = await deliverer.deliver(job([host], ["a@dest.test"]))
    assert first.outcome == TEMPORARY
    assert destinations.limit("dest.test") == 1
    await asyncio.sleep(0.4)
    results = await asyncio.gather(*(deliverer.deliver(job([host], [f"u{i}@dest.test"])) for i in range(3)))

    assert [r.outcome for [r] in results] == [DELIVERED] * 3
    assert peer.max_in_data < 3, "concurrency grows back one delivery at a time"
    assert destinations.limit("dest.test") == 4


async def test_a_4_7_rate_limit_reply_backs_off_but_greylisting_does_not(start_peer, host_of, job, options):
    peer = await start_peer(
        rules={"grey": "450 4.7.1 Greylisted, please try again later", "fast": "450 4.7.1 Rate limit exceeded"}
    )
    destinations = limits()
    deliverer = Deliverer(options, destinations=destinations)
    host = host_of("mx1.dest.test", peer)

    [grey] = await deliverer.deliver(job([host], ["grey@dest.test"]))
    [ok] = await deliverer.deliver(job([host], ["ok@dest.test"]))
    [fast] = await deliverer.deliver(job([host], ["fast@dest.test"]))
    [paused] = await deliverer.deliver(job([host], ["ok2@dest.test"]))

    assert (grey.outcome, ok.outcome, fast.outcome) == (TEMPORARY, DELIVERED, TEMPORARY)
    assert paused.outcome == TEMPORARY and paused.status == "4.7.1"
    assert "Rate limit exceeded" in paused.diagnostic
    assert len(peer.messages) == 1


async def test_a_full_destination_defers_after_a_bounded_wait(start_peer, host_of, job, options, metric):
    peer = await start_peer(data_delay=1.0)
    deliverer = Deliverer(options, destinations=limits(concurrency=1, wait=0.2))
    host = host_of("mx1.dest.test", peer)
    busy_before = metric("kubemta_destination_deferrals_total", reason="busy")

    first, second = await asyncio.gather(
        deliverer.deliver(job([host], ["a@dest.test"])), deliverer.deliver(job([host], ["b@dest.test"]))
    )

    assert sorted([first[0].outcome, second[0].outcome]) == sorted([DELIVERED, TEMPORARY])
    [deferred] = first if first[0].outcome == TEMPORARY else second
    assert deferred.status == "4.4.5"
    assert "1 deliveries to dest.test already running" in deferred.diagnostic
    assert peer.connections == 1
    assert metric("kubemta_destination_deferrals_total", reason="busy") == busy_before + 1


async def test_cancelled_delivery_gives_its_slot_back(start_peer, host_of, job, options):
    peer = await start_peer(data_delay=5.0)
    destinations = limits(concurrency=1)
    deliverer = Deliverer(options, destinations=destinations)
    host = host_of("mx1.dest.test", peer)

    task = asyncio.create_task(deliverer.deliver(job([host])))
    await asyncio.sleep(0.3)
    assert destinations.active("dest.test") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert destinations.active("dest.test") == 0


def test_relayhost_and_transport_routes_count_against_their_next_hop(job):
    host = message_pb2.RouteHost(hostname="smtp.relay.test", address="10.0.0.5", port=587)
    relayed = job([host])
    relayed.route.source = "relayhost"
    mx = job([host])

    assert destination_of(relayed) == "relayhost:smtp.relay.test:587"
    assert destination_of(mx) == "dest.test"


@pytest.mark.parametrize(
    ("code", "status", "text", "throttled"),
    [
        (421, "4.3.2", "421 4.3.2 System shutting down", True),
        (451, "4.7.500", "451 4.7.500 Server busy. Please try again later", True),
        (450, "4.7.1", "450 4.7.1 Greylisted", False),
        (450, "4.2.1", "450 4.2.1 receiving mail at a rate that prevents additional messages", False),
        (550, "5.7.1", "550 5.7.1 rate limit", False),
    ],
)
def test_which_replies_ask_us_to_slow_down(code, status, text, throttled):
    assert (throttle_of(code, status, text) is not None) is throttled
