"""End to end: a domain whose MX hosts publish many black-holed addresses is deferred within the
delivery attempt's deadline after a bounded number of connections, while mail to a healthy domain
is delivered meanwhile (issue 11 item 8).

The test's own zone, served by its own nsd: `blackhole.deadline.test` has three MX hosts with four
A records each, all on loopback addresses of this run where a listener accepts and never greets;
`healthy.deadline.test` has one working MX. The services run with a 3 s connect/greeting timeout
and an 8 s attempt deadline, so one attempt can try at most three addresses (and never more than
KUBEMTA_SMTP_MX_ADDRESS_LIMIT, 5); without the deadline and the caps it would try all twelve.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import MailWorld, make_message, send
from tests.e2e.test_pipeline import SENDER, eventually
from tests.harness.dns_server import DnsServer, zone_text
from tests.harness.ports import free_port
from tests.harness.smtp_peer import ScriptedPeer
from tests.harness.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

ZONE = "deadline.test"
BLACKHOLE = f"blackhole.{ZONE}"
HEALTHY = f"healthy.{ZONE}"
# MX host -> last octets of its A records in this run's 127.a.b.0/24 (clear of tests/e2e/conftest.py's HOSTS)
HOLES = {"bh1": (100, 101, 102, 103), "bh2": (104, 105, 106, 107), "bh3": (108, 109, 110, 111)}
HEALTHY_OCTET, NS_OCTET = 120, 121
DEADLINE, CONNECT_TIMEOUT = "8s", "3s"


@pytest.fixture(scope="module")
def deadline_dns(tmp_path_factory: pytest.TempPathFactory, loopback_net: str) -> Iterator[DnsServer]:
    records = ["blackhole MX 10 bh1", "blackhole MX 10 bh2", "blackhole MX 20 bh3", "healthy MX 10 ok"]
    records += [f"{name} A {loopback_net}.{octet}" for name, octets in HOLES.items() for octet in octets]
    records += [f"ok A {loopback_net}.{HEALTHY_OCTET}", f"ns A {loopback_net}.{NS_OCTET}"]
    address = f"{loopback_net}.{NS_OCTET}"
    server = DnsServer(
        Path(tmp_path_factory.mktemp("deadline-dns")),
        address,
        free_port(address),
        zones={ZONE: zone_text(ZONE, records, ttl=30)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_black_holed_mx_addresses_are_deferred_by_the_deadline_while_other_mail_flows(
    stack: Stack, world: MailWorld, deadline_dns: DnsServer
) -> None:
    holes: list[ScriptedPeer] = []  # listeners that accept and never greet
    for octets in HOLES.values():
        for octet in octets:
            hole = ScriptedPeer(f"{world.net}.{octet}", world.delivery_port, silent=True)
            world.peers.append(hole)
            holes.append(hole)
            await hole.start()
    healthy = ScriptedPeer(f"{world.net}.{HEALTHY_OCTET}", world.delivery_port, hostname=f"ok.{ZONE}")
    world.peers.append(healthy)
    await healthy.start()
    smtp_port = free_port()
    server = f"127.0.0.1:{smtp_port}"
    stack.env.update(
        world.env(
            smtp_listen=server,
            dns_nameservers=deadline_dns.nameserver,
            smtp_connect_timeout=CONNECT_TIMEOUT,
            delivery_attempt_deadline=DEADLINE,
            retry_schedule="1h",  # one attempt in this test
        )
    )
    await stack.start()

    stuck = make_message(SENDER, [f"carol@{BLACKHOLE}"], "black holes")
    outcome = await send(server, SENDER, [f"carol@{BLACKHOLE}"], stuck)
    assert outcome.data is not None and outcome.data[0] == 250, outcome.data

    async def attempt_started() -> bool:
        return sum(hole.connections for hole in holes) > 0

    await eventually(attempt_started, what="the worker connecting to a black-holed MX address")
    flowing = make_message(SENDER, [f"dave@{HEALTHY}"], "healthy meanwhile")
    outcome = await send(server, SENDER, [f"dave@{HEALTHY}"], flowing)
    assert outcome.data is not None and outcome.data[0] == 250, outcome.data

    [message] = await healthy.wait_for_messages(1, timeout=20)
    assert message.rcpt_tos == [f"dave@{HEALTHY}"]
    deferred = await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="deferred")
    assert deferred == 0, "the black-holed attempt should still be running when the healthy mail is delivered"

    async def black_holes_deferred() -> bool:
        return await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="deferred") >= 1

    await eventually(black_holes_deferred, within=30, what="the black-holed domain's recipient deferred")
    tried = sum(hole.connections for hole in holes)
    assert 1 <= tried <= 3, [hole.connections for hole in holes]
    assert all(hole.connections <= 1 for hole in holes)
    [ended] = [
        event
        for event in stack.log_events("delivery-worker")
        if str(event.get("message", "")).startswith("delivery attempt ended by its deadline")
    ]
    assert (
        f"the delivery attempt's deadline ({DEADLINE}, KUBEMTA_DELIVERY_ATTEMPT_DEADLINE) has passed "
        f"after {tried} of 12 route address(es); last: connect to bh"
    ) in str(ended["message"])
    assert await stack.metric("delivery-worker", "kubemta_delivery_attempts_total", result="delivered") == 1
