"""Every decision of destinations.py pinned, on the Destinations object itself with a hand-set clock:
which key a job counts against, which replies ask us to slow down, when a destination is paused or
full and what the deferred job's status and diagnostic say, how the limit falls and grows back, and
which destinations the bounded map may forget (never one with deliveries running or still paused)."""

import asyncio
import logging
from collections.abc import Sequence

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.logs import message_context
from kubemta_delivery_worker.destinations import (
    MAX_DESTINATIONS,
    DestinationDeferred,
    Destinations,
    Slot,
    Throttle,
    destination_of,
    first_throttle,
    throttle_of,
)

SLOW_DOWN = Throttle("4.7.0", "421 4.7.0 Too many messages, slow down")


class Clock:
    """A monotonic clock the test sets by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def destinations(
    clock: Clock, *, concurrency: int = 3, backoff: float = 60.0, wait: float = 0.05, max_destinations: int = 100
) -> Destinations:
    return Destinations(
        concurrency=concurrency,
        backoff_seconds=backoff,
        wait_seconds=wait,
        clock=clock,
        max_destinations=max_destinations,
    )


async def throttle(limits: Destinations, destination: str, reply: Throttle = SLOW_DOWN) -> None:
    """One delivery to `destination` that got a slow-down reply."""
    with message_context("QTHROTTLED"):  # the job's, set by the deliverer
        async with limits.slot(destination) as slot:
            slot.throttled(reply)


async def deliver(limits: Destinations, destination: str) -> None:
    """One delivery to `destination` that was not throttled."""
    async with limits.slot(destination):
        pass


async def deferred(limits: Destinations, destination: str) -> DestinationDeferred:
    with pytest.raises(DestinationDeferred) as caught:
        await deliver(limits, destination)
    return caught.value


def routed(source: str, hosts: Sequence[message_pb2.RouteHost], domain: str = "Dest.Test") -> message_pb2.DeliveryJob:
    return message_pb2.DeliveryJob(domain=domain, route=message_pb2.Route(source=source, hosts=list(hosts)))


# -- which destination a job counts against --


@pytest.mark.parametrize("source", ["relayhost", "transport"])
def test_relayhost_and_transport_keys_are_the_lower_cased_first_next_hop(source):
    hosts = [
        message_pb2.RouteHost(hostname="SMTP.Relay.TEST", address="10.0.0.5", port=587),
        message_pb2.RouteHost(hostname="backup.relay.test", address="10.0.0.6", port=25),
    ]

    assert destination_of(routed(source, hosts)) == f"{source}:smtp.relay.test:587"


def test_a_next_hop_without_a_host_name_is_keyed_by_its_address():
    host = message_pb2.RouteHost(address="2001:DB8::5", port=25)

    assert destination_of(routed("relayhost", [host])) == "relayhost:2001:db8::5:25"


def test_an_lmtp_transport_is_keyed_by_its_socket():
    host = message_pb2.RouteHost(hostname="Mailstore", unix_socket="/run/Dovecot/lmtp", port=24)

    assert destination_of(routed("transport", [host])) == "transport:/run/dovecot/lmtp"


@pytest.mark.parametrize("source", ["mx", "", "implicit_mx", "RELAYHOST"])
def test_other_routes_are_keyed_by_the_lower_cased_domain(source):
    host = message_pb2.RouteHost(hostname="mx1.dest.test", address="10.0.0.5", port=25)

    assert destination_of(routed(source, [host])) == "dest.test"


def test_a_relayhost_route_without_hosts_is_keyed_by_the_domain():
    assert destination_of(routed("relayhost", [])) == "dest.test"


# -- which replies ask us to slow down --


@pytest.mark.parametrize(
    ("code", "status", "text", "throttled"),
    [
        (421, "", "421 Service not available", True),
        (421, "4.3.2", "421 4.3.2 System shutting down", True),
        (420, "4.7.0", "420 4.7.0 nothing about speed", False),
        (422, "", "422 mailbox over quota", False),
        (400, "4.7.1", "400 4.7.1 Rate limited", True),
        (499, "4.7.1", "499 4.7.1 Rate limited", True),
        (399, "4.7.1", "399 4.7.1 Rate limited", False),
        (500, "4.7.1", "500 4.7.1 Rate limited", False),
        (450, "4.7.1", "450 4.7.1 RATE LIMIT exceeded", True),
        (450, "4.7.1", "450 4.7.1 too many connections", True),
        (450, "4.7.1", "450 4.7.1 please slow down", True),
        (450, "4.7.1", "450 4.7.1 throttled", True),
        (450, "4.7.1", "450 4.7.1 server busy", True),
        (450, "4.7.1", "450 4.7.1 unusual volume", True),
        (450, "4.7.12", "450 4.7.12 limit reached", True),
        (450, "4.7.", "450 4.7. limit reached", False),
        (450, "4.2.1", "450 4.2.1 rate limit", False),
        (450, "14.7.1", "450 14.7.1 rate limit", False),
        (450, "4.7.1x", "450 4.7.1x rate limit", False),
        (450, "4.7.1", "450 4.7.1 Greylisted", False),
    ],
)
def test_which_replies_ask_us_to_slow_down(code, status, text, throttled):
    assert (throttle_of(code, status, text) is not None) is throttled


def test_a_throttle_keeps_the_replys_status_and_diagnostic():
    assert throttle_of(451, "4.7.500", "451 4.7.500 Server busy") == Throttle("4.7.500", "451 4.7.500 Server busy")
    assert throttle_of(421, "", "421 closing") == Throttle("4.0.0", "421 closing")


def test_the_first_reply_that_asks_to_slow_down_is_the_throttle():
    replies = [
        (250, "2.1.5", "250 2.1.5 Ok"),
        (450, "4.7.1", "450 4.7.1 Greylisted"),
        (451, "4.7.1", "451 4.7.1 rate limit one"),
        (421, "4.7.0", "421 4.7.0 too many two"),
    ]

    assert first_throttle(replies) == Throttle("4.7.1", "451 4.7.1 rate limit one")
    assert first_throttle(replies[:2]) is None
    assert first_throttle([]) is None


# -- slots, limits and pauses --


def test_an_unknown_destination_has_nothing_running_and_the_full_limit():
    limits = destinations(Clock(), concurrency=7)

    assert limits.active("dest.test") == 0
    assert limits.limit("dest.test") == 7


@pytest.mark.parametrize("now", [0.0, 0.5, 1000.0])
async def test_a_destination_never_throttled_is_not_paused_whatever_the_monotonic_clock_reads(now):
    limits = destinations(Clock(now), concurrency=1, wait=0.05)

    await deliver(limits, "dest.test")
    async with limits.slot("dest.test"):
        refused = await deferred(limits, "dest.test")

    assert refused.reason == "busy"
    assert limits.active("dest.test") == 0


async def test_a_slot_counts_as_running_until_it_ends():
    limits = destinations(Clock())

    async with limits.slot("dest.test") as first, limits.slot("dest.test") as second:
        assert (first.throttle, second.throttle) == (None, None)
        assert limits.active("dest.test") == 2
        assert limits.active("other.test") == 0

    assert limits.active("dest.test") == 0


async def test_a_full_destination_defers_as_busy_after_the_wait(metric):
    limits = destinations(Clock(), concurrency=2, wait=0.05)
    busy = metric("kubemta_destination_deferrals_total", reason="busy")

    async with limits.slot("dest.test"), limits.slot("dest.test"):
        refused = await deferred(limits, "dest.test")

    assert refused.status == "4.4.5"
    assert refused.reason == "busy"
    assert refused.diagnostic == (
        "delivery temporarily suspended: 2 deliveries to dest.test already running, none finished within 0s"
    )
    assert str(refused) == refused.diagnostic
    assert metric("kubemta_destination_deferrals_total", reason="busy") == busy + 1
    assert limits.active("dest.test") == 0


async def test_the_busy_diagnostic_names_the_wait_in_whole_seconds():
    limits = destinations(Clock(), concurrency=1, wait=0.6)

    async with limits.slot("dest.test"):
        refused = await deferred(limits, "dest.test")

    assert refused.diagnostic.endswith("none finished within 1s")


async def test_a_waiting_job_gets_the_slot_a_finished_delivery_gives_back():
    limits = destinations(Clock(), concurrency=1, wait=5.0)
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with limits.slot("dest.test"):
            order.append("first")
            await release.wait()

    async def second() -> None:
        async with limits.slot("dest.test"):
            order.append("second")
            assert limits.active("dest.test") == 1

    running = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(second())
    await asyncio.sleep(0.05)
    assert order == ["first"]
    release.set()
    await asyncio.gather(running, waiting)

    assert order == ["first", "second"]


async def test_a_slow_down_reply_pauses_the_destination_and_drops_its_limit_to_one(metric, caplog):
    clock = Clock()
    limits = destinations(clock, concurrency=5, backoff=90.0)
    backoffs = metric("kubemta_destination_backoffs_total")
    paused = metric("kubemta_destination_deferrals_total", reason="backoff")

    with caplog.at_level(logging.WARNING, logger="kubemta_delivery_worker.destinations"):
        await throttle(limits, "dest.test")
    clock.now += 30.4
    refused = await deferred(limits, "dest.test")

    assert limits.limit("dest.test") == 1
    assert refused.status == "4.7.0"
    assert refused.reason == "backoff"
    assert refused.diagnostic == "delivery temporarily suspended for 60s: 421 4.7.0 Too many messages, slow down"
    assert metric("kubemta_destination_backoffs_total") == backoffs + 1
    assert metric("kubemta_destination_deferrals_total", reason="backoff") == paused + 1
    [record] = caplog.records
    assert record.getMessage() == (
        "backing off dest.test for 90s (concurrency 1 afterwards): 421 4.7.0 Too many messages, slow down"
    )
    assert (record.queue_id, record.destination, record.backoff_seconds) == ("QTHROTTLED", "dest.test", 90.0)


async def test_a_pause_ends_exactly_at_the_backoff():
    clock = Clock()
    limits = destinations(clock, backoff=60.0)
    await throttle(limits, "dest.test")

    clock.now += 59.9
    refused = await deferred(limits, "dest.test")
    clock.now += 0.1
    await deliver(limits, "dest.test")

    assert refused.diagnostic.startswith("delivery temporarily suspended for 0s: ")
    assert limits.limit("dest.test") == 2


async def test_a_pause_defers_other_destinations_not_at_all():
    limits = destinations(Clock())
    await throttle(limits, "dest.test")

    await deliver(limits, "other.test")

    assert limits.limit("other.test") == 3


async def test_the_limit_grows_back_by_one_per_unthrottled_delivery_up_to_the_concurrency():
    clock = Clock()
    limits = destinations(clock, concurrency=3, backoff=10.0)
    await throttle(limits, "dest.test")
    clock.now += 10.0

    grown = []
    for _ in range(4):
        await deliver(limits, "dest.test")
        grown.append(limits.limit("dest.test"))

    assert grown == [2, 3, 3, 3]


async def test_a_job_waiting_on_a_full_destination_is_deferred_as_soon_as_it_is_paused():
    limits = destinations(Clock(), concurrency=1, wait=5.0)
    release = asyncio.Event()

    async def throttled_delivery() -> None:
        async with limits.slot("dest.test") as slot:
            await release.wait()
            slot.throttled(SLOW_DOWN)

    running = asyncio.create_task(throttled_delivery())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(deferred(limits, "dest.test"))
    await asyncio.sleep(0.05)
    release.set()
    await running
    async with asyncio.timeout(1.0):
        refused = await waiting

    assert refused.reason == "backoff"
    assert refused.status == "4.7.0"
    assert limits.active("dest.test") == 0


async def test_a_full_destination_whose_pause_just_ended_still_waits_for_a_free_slot():
    clock = Clock()
    limits = destinations(clock, concurrency=2, backoff=60.0, wait=0.05)
    async with limits.slot("dest.test"):
        await throttle(limits, "dest.test")  # the limit is 1 now, and one delivery is still running
        clock.now += 60.0
        refused = await deferred(limits, "dest.test")

        assert refused.reason == "busy"
        assert limits.active("dest.test") == 1


# -- the bounded map of destinations --


async def forgettable(limits: Destinations, clock: Clock, destination: str) -> None:
    """A destination whose state differs from a fresh one (limit 1 after a pause that has ended)."""
    await throttle(limits, destination)
    clock.now += 60.0


async def test_the_least_recently_used_idle_destination_is_forgotten_beyond_the_bound():
    clock = Clock()
    limits = destinations(clock, max_destinations=2)
    await forgettable(limits, clock, "a.test")
    await forgettable(limits, clock, "b.test")

    await deliver(limits, "c.test")

    assert limits.limit("a.test") == 3, "forgotten: back to the full limit"
    assert limits.limit("b.test") == 1, "remembered"
    assert limits.limit("c.test") == 3


async def test_using_a_destination_makes_it_the_most_recently_used():
    clock = Clock()
    limits = destinations(clock, max_destinations=2)
    await forgettable(limits, clock, "a.test")
    await forgettable(limits, clock, "b.test")
    await forgettable(limits, clock, "a.test")

    await deliver(limits, "c.test")

    assert limits.limit("a.test") == 1, "remembered"
    assert limits.limit("b.test") == 3, "forgotten"


async def test_destinations_with_deliveries_running_are_never_forgotten():
    clock = Clock()
    limits = destinations(clock, max_destinations=1, wait=5.0)

    async with limits.slot("a.test"):
        async with limits.slot("b.test"):
            await deliver(limits, "c.test")

            assert limits.active("a.test") == 1
            assert limits.active("b.test") == 1
        assert limits.active("a.test") == 1

    async with limits.slot("a.test"):
        assert limits.active("a.test") == 1


async def test_a_new_destination_is_remembered_even_when_every_other_one_is_running():
    limits = destinations(Clock(), concurrency=1, max_destinations=1, wait=0.05)

    async with limits.slot("a.test"), limits.slot("b.test"):
        assert (limits.active("a.test"), limits.active("b.test")) == (1, 1)
        refused = await deferred(limits, "b.test")

    assert refused.reason == "busy"


async def test_a_forgotten_running_destination_would_let_a_second_delivery_past_its_limit():
    limits = destinations(Clock(), concurrency=1, max_destinations=1, wait=0.05)

    async with limits.slot("a.test"):
        await deliver(limits, "b.test")
        refused = await deferred(limits, "a.test")

    assert refused.reason == "busy"


async def test_paused_destinations_are_never_forgotten():
    clock = Clock()
    limits = destinations(clock, max_destinations=1, backoff=60.0)
    await throttle(limits, "a.test")

    await deliver(limits, "b.test")
    refused = await deferred(limits, "a.test")

    assert refused.reason == "backoff"


async def test_a_destination_whose_pause_ends_now_may_be_forgotten():
    clock = Clock()
    limits = destinations(clock, max_destinations=1, backoff=60.0)
    await throttle(limits, "a.test")
    clock.now += 60.0

    await deliver(limits, "b.test")

    assert limits.limit("a.test") == 3


async def test_the_map_holds_exactly_its_bound():
    clock = Clock()
    limits = destinations(clock, max_destinations=3)
    for name in ("a.test", "b.test", "c.test"):
        await forgettable(limits, clock, name)

    assert [limits.limit(name) for name in ("a.test", "b.test", "c.test")] == [1, 1, 1]
    await deliver(limits, "d.test")
    assert [limits.limit(name) for name in ("a.test", "b.test", "c.test")] == [3, 1, 1]


async def test_by_default_ten_thousand_destinations_are_remembered():
    clock = Clock()
    limits = Destinations(concurrency=3, backoff_seconds=60.0, wait_seconds=1.0, clock=clock)
    await forgettable(limits, clock, "first.test")

    for number in range(MAX_DESTINATIONS - 1):
        await deliver(limits, f"d{number}.test")
    assert limits.limit("first.test") == 1
    await deliver(limits, "one-more.test")

    assert MAX_DESTINATIONS == 10_000
    assert limits.limit("first.test") == 3


def test_a_slot_reports_the_throttle_it_was_given():
    slot = Slot()

    slot.throttled(SLOW_DOWN)

    assert slot.throttle == SLOW_DOWN
