"""The trust decision on the bus: authenticated, relay network, or untrusted (anyone mailing a local domain).

The queue-manager signs only trusted mail (and adds missing Date:/Message-ID: only to it), so a
stranger's `From: ceo@example.com` to a local mailbox must travel as TRUST_UNTRUSTED.
"""

import base64

from kubemta.v1 import message_pb2

FORGED = (
    b"From: The CEO <ceo@example.com>\r\nTo: staff@example.org\r\nSubject: urgent\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\nMessage-ID: <f1@attacker.test>\r\n\r\nPay.\r\n"
)


async def queued(client, publisher, sender: str, recipient: str, message: bytes) -> message_pb2.AcceptedMessage:
    assert (await client.last(f"MAIL FROM:<{sender}>")).startswith("250")
    assert (await client.last(f"RCPT TO:<{recipient}>")).startswith("250")
    assert (await client.last("DATA")).startswith("354")
    await client.send(message + b".\r\n")
    reply = (await client.read_reply())[-1]
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return message_pb2.AcceptedMessage.FromString(publisher.published[-1].body)


async def test_a_client_outside_the_relay_networks_is_untrusted(start_server) -> None:
    harness = await start_server(local_domains=("example.org",), relay_networks=("192.0.2.0/24",))
    client = await harness.connect()
    message = await queued(client, harness.publisher, "ceo@example.com", "staff@example.org", FORGED)
    assert message.trust == message_pb2.TRUST_UNTRUSTED
    assert message.authenticated_user == ""


async def test_a_client_in_the_relay_networks_is_trusted(start_server) -> None:
    harness = await start_server(local_domains=("example.org",), relay_networks=("127.0.0.0/8",))
    client = await harness.connect()
    message = await queued(client, harness.publisher, "ceo@example.com", "someone@other.test", FORGED)
    assert message.trust == message_pb2.TRUST_RELAY_NETWORK


async def test_an_authenticated_session_is_trusted_and_names_its_user(start_auth_server) -> None:
    server = await start_auth_server(users={"billing": ("pw", ["example.com"])}, relay_networks=())
    client = await server.harness.connect()
    token = base64.b64encode(b"\0billing\0pw").decode()
    assert (await client.last(f"AUTH PLAIN {token}")).startswith("235")
    message = await queued(client, server.publisher, "ceo@example.com", "someone@other.test", FORGED)
    assert message.trust == message_pb2.TRUST_AUTHENTICATED
    assert message.authenticated_user == "billing"
