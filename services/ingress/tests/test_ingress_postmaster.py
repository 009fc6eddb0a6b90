"""RFC 5321 section 4.5.1: a bare `RCPT TO:<Postmaster>` is accepted from anyone, as this system's postmaster."""

import pytest

from kubemta.v1 import message_pb2
from tests.harness.ingress_kit import HOSTNAME

OUTSIDER = {"local_domains": (), "relay_networks": ("10.0.0.0/8",)}  # the test client is neither local nor trusted


@pytest.mark.parametrize("spelling", ["postmaster", "Postmaster", "POSTMASTER"])
async def test_bare_postmaster_is_accepted_from_anyone_as_postmaster_at_the_hostname(start_server, spelling) -> None:
    harness = await start_server(**OUTSIDER)
    client = await harness.connect()
    assert (await client.command("MAIL FROM:<someone@example.net>"))[-1].startswith("250 ")
    assert (await client.command(f"RCPT TO:<{spelling}>"))[-1] == "250 2.1.5 Ok"
    assert (await client.command("DATA"))[-1].startswith("354")
    await client.send(b"Subject: hello postmaster\r\n\r\nhi\r\n.\r\n")
    assert (await client.read_reply())[-1].startswith("250 2.0.0 Ok: queued as")
    [queued] = harness.publisher.published
    assert list(message_pb2.AcceptedMessage.FromString(queued.body).recipients) == [f"postmaster@{HOSTNAME}"]


@pytest.mark.parametrize("address", ["postmasters", "postmaster@elsewhere.example", "abuse"])
async def test_only_the_bare_name_is_special(start_server, address: str) -> None:
    harness = await start_server(**OUTSIDER)
    client = await harness.connect()
    await client.command("MAIL FROM:<someone@example.net>")
    reply = (await client.command(f"RCPT TO:<{address}>"))[-1]
    assert reply.startswith(("501 ", "554 5.7.1")), reply
