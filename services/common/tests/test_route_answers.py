"""Route answers (kubemta_common.route_answers, route_answer_log, route_order): freshness, the LRU bound,
hostile stream records, one record per domain per lifetime, and the equal-preference shuffle."""

import asyncio
import logging
import random

import pytest

from kubemta.v1 import message_pb2, routes_pb2
from kubemta_common.amqp.streams import ROUTES, stream_declarations
from kubemta_common.errors import PublishFailed
from kubemta_common.route_answer_log import RouteAnswerLog
from kubemta_common.route_answers import (
    MAX_ANSWER_SECONDS,
    MAX_HOSTS,
    RouteAnswers,
    answer_record,
    parse_answer,
)
from kubemta_common.route_order import reorder_route, shuffle_equal_preferences
from tests.harness.broker_fixtures import RETENTION

NOW = 1_800_000_000.0


def host(name: str, address: str, preference: int = 10, port: int = 25) -> message_pb2.RouteHost:
    return message_pb2.RouteHost(hostname=name, address=address, port=port, preference=preference)


def mx_route(*hosts: message_pb2.RouteHost) -> message_pb2.Route:
    return message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_SMTP,
        hosts=list(hosts) or [host("mx1.example.org", "192.0.2.1")],
        source="mx",
        provider="other",
    )


def body(domain: str = "example.org", route: message_pb2.Route | None = None, fresh_for: float = 300.0) -> bytes:
    record = answer_record(domain, route or mx_route(), now=NOW, fresh_for=fresh_for)
    return record.SerializeToString()


def test_a_fresh_answer_is_used_until_its_lifetime_ends_then_stale() -> None:
    answers = RouteAnswers()
    answer = parse_answer(body(fresh_for=60), NOW)
    assert answer is not None
    answers.add(answer)
    route, result = answers.lookup("example.org", NOW + 59)
    assert result == "used" and route is not None and route.hosts[0].address == "192.0.2.1"
    assert answers.lookup("example.org", NOW + 60) == (None, "stale")
    assert answers.lookup("example.org", NOW + 61) == (None, "missing")  # a stale answer is dropped
    assert answers.lookup("example.net", NOW) == (None, "missing")


def test_the_lifetime_is_capped() -> None:
    record = answer_record("example.org", mx_route(), now=NOW, fresh_for=86400)
    assert record.fresh_until.ToSeconds() - record.resolved_at.ToSeconds() == MAX_ANSWER_SECONDS


def test_a_later_answer_replaces_an_earlier_one_but_not_the_other_way_round() -> None:
    answers = RouteAnswers()
    old = parse_answer(
        answer_record("a.org", mx_route(host("old", "192.0.2.1")), now=NOW, fresh_for=100).SerializeToString(), NOW
    )
    new = parse_answer(
        answer_record("a.org", mx_route(host("new", "192.0.2.2")), now=NOW + 5, fresh_for=100).SerializeToString(),
        NOW + 5,
    )
    assert old is not None and new is not None
    answers.add(new)
    answers.add(old)  # e.g. another resolver replica's, read later
    route, _ = answers.lookup("a.org", NOW + 6)
    assert route is not None and route.hosts[0].hostname == "new"


def test_the_map_keeps_at_most_its_capacity_least_recently_used_first_out() -> None:
    answers = RouteAnswers(capacity=3)
    for name in ("a.org", "b.org", "c.org"):
        answer = parse_answer(body(name), NOW)
        assert answer is not None
        answers.add(answer)
    assert answers.lookup("a.org", NOW)[1] == "used"  # a is now the most recently used
    answer = parse_answer(body("d.org"), NOW)
    assert answer is not None
    answers.add(answer)
    assert len(answers) == 3
    assert answers.lookup("b.org", NOW) == (None, "missing")
    assert {name: answers.lookup(name, NOW)[1] for name in ("a.org", "c.org", "d.org")} == dict.fromkeys(
        ("a.org", "c.org", "d.org"), "used"
    )


def hostile() -> dict[str, bytes]:
    many = mx_route(*(host(f"mx{n}.example.org", f"192.0.2.{n % 250 + 1}") for n in range(MAX_HOSTS + 1)))
    no_hosts = routes_pb2.RouteAnswer(domain="example.org")
    no_hosts.route.source = "mx"
    no_hosts.resolved_at.FromSeconds(int(NOW))
    no_hosts.fresh_until.FromSeconds(int(NOW) + 60)
    too_long = answer_record("example.org", mx_route(), now=NOW, fresh_for=60)
    too_long.fresh_until.FromSeconds(int(NOW + 86400))
    future = answer_record("example.org", mx_route(), now=NOW + 3600, fresh_for=60)
    return {
        "garbage": b"\xff\xfe not a protobuf \x00\x01\x02",
        "empty domain": body(""),
        "upper-case domain": body("Example.ORG"),
        "domain with a space": body("exa mple.org"),
        "overlong domain": body("a" * 300),
        "no hosts": no_hosts.SerializeToString(),
        "port 0": body(route=mx_route(host("mx", "192.0.2.1", port=0))),
        "port 70000": body(route=mx_route(host("mx", "192.0.2.1", port=70000))),
        "no address": body(route=mx_route(host("mx", ""))),
        "huge host list": body(route=many),
        "lifetime beyond the cap": too_long.SerializeToString(),
        "resolved in the future": future.SerializeToString(),
        "no times": routes_pb2.RouteAnswer(domain="example.org", route=mx_route()).SerializeToString(),
    }


@pytest.mark.parametrize("case", sorted(hostile()))
def test_a_hostile_answer_is_ignored_with_a_log_line(case: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kubemta_common.route_answers"):
        assert parse_answer(hostile()[case], NOW) is None
    assert caplog.records, "no log line for an ignored answer"


def test_a_unix_socket_route_needs_no_address_or_port() -> None:
    route = message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_LMTP, hosts=[message_pb2.RouteHost(unix_socket="/run/dovecot/lmtp")]
    )
    assert parse_answer(body("local.test", route), NOW) is not None


def test_shuffling_keeps_preferences_in_order_and_an_exchangers_addresses_together() -> None:
    hosts = [
        host("a", "192.0.2.1", 10),
        host("a", "2001:db8::1", 10),
        host("b", "192.0.2.2", 10),
        host("c", "192.0.2.3", 10),
        host("z", "192.0.2.9", 20),
    ]
    orders = set()
    for seed in range(50):
        ordered = shuffle_equal_preferences(hosts, random.Random(seed))
        names = [h.hostname for h in ordered]
        assert names[-1] == "z" and sorted(names[:4]) == ["a", "a", "b", "c"]
        first_a = names.index("a")
        assert names[first_a + 1] == "a"
        assert [h.address for h in ordered if h.hostname == "a"] == ["192.0.2.1", "2001:db8::1"]
        orders.add(tuple(dict.fromkeys(names)))
    assert len(orders) == 6  # every order of the three equal exchangers is drawn


def test_reorder_route_draws_the_order_in_place() -> None:
    route = mx_route(host("a", "192.0.2.1"), host("b", "192.0.2.2"))
    seen = set()
    for seed in range(20):
        copy = message_pb2.Route()
        copy.CopyFrom(route)
        reorder_route(copy, random.Random(seed))
        seen.add(tuple(h.hostname for h in copy.hosts))
    assert seen == {("a", "b"), ("b", "a")}


def test_the_routes_stream_is_declared_with_a_short_retention_and_small_segments() -> None:
    arguments = stream_declarations(RETENTION)[ROUTES]
    assert arguments["x-queue-type"] == "stream"
    assert arguments["x-max-age"] == "3600s"
    assert arguments["x-stream-max-segment-size-bytes"] == 1024 * 1024


class Publishes:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.fail = False

    async def publish_raw(self, routing_key: str, body: bytes, **_: object) -> None:
        if self.fail:
            raise PublishFailed("no confirm")
        self.bodies.append((routing_key, body))


async def wait_for(condition, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling a condition of a background task, bounded
            await asyncio.sleep(0.01)


async def test_the_log_publishes_one_answer_per_domain_per_lifetime() -> None:
    clock = [NOW]
    publisher = Publishes()
    log = RouteAnswerLog(clock=lambda: clock[0])
    log.start(publisher)  # type: ignore[arg-type]
    try:
        for _ in range(100):
            log.offer("example.org", mx_route(), 60)
        log.offer("example.net", mx_route(), 60)
        await wait_for(lambda: len(publisher.bodies) == 2)
        clock[0] += 30
        log.offer("example.org", mx_route(), 30)
        await asyncio.sleep(0.05)
        assert len(publisher.bodies) == 2
        clock[0] += 29  # less than REFRESH_BEFORE left of the first answer: a new one is published
        log.offer("example.org", mx_route(), 60)
        await wait_for(lambda: len(publisher.bodies) == 3)
        (key, last) = publisher.bodies[-1]
        answer = parse_answer(last, clock[0])
        assert key == ROUTES and answer is not None and answer.domain == "example.org"
        assert answer.fresh_until == pytest.approx(clock[0] + 60, abs=1)
    finally:
        await log.close()


async def test_the_log_never_raises_and_skips_short_lived_or_empty_answers() -> None:
    publisher = Publishes()
    publisher.fail = True
    log = RouteAnswerLog(buffer=2, clock=lambda: NOW)
    log.start(publisher)  # type: ignore[arg-type]
    try:
        log.offer("short.org", mx_route(), 1)
        log.offer("empty.org", message_pb2.Route(), 60)
        assert log.buffered == 0
        for name in ("a.org", "b.org", "c.org"):
            log.offer(name, mx_route(), 60)  # the stream is down: kept (the oldest dropped beyond the buffer)
        assert log.buffered == 2
        publisher.fail = False
        await wait_for(lambda: log.buffered == 0)
        assert [parse_answer(b, NOW).domain for _, b in publisher.bodies] == ["b.org", "c.org"]  # type: ignore[union-attr]
    finally:
        await log.close()
