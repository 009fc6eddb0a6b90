"""Every address form that has opened a relay, from an untrusted, unauthenticated client.

The server's local domain is example.com; the client (127.0.0.1) is outside the relay
networks. Decisions are documented in kubemta_ingress/policy.py. Hypothesis fuzzes
the address parser and the MAIL/RCPT argument handling of the real server.
"""

import asyncio
import ipaddress
import socket
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import message_pb2
from kubemta_ingress.policy import RelayPolicy, canonical_domain, check_address, has_routing
from tests.harness.fake_publisher import Published

LOCAL = ("example.com",)
UNTRUSTED = ("10.0.0.0/8",)
IO_TIMEOUT = 5.0
DENIED = "554 5.7.1"
SYNTAX = "501 5."  # 5.1.3 from the address check, 5.5.4 when aiosmtpd finds no address at all
POLICY = RelayPolicy.create(LOCAL, [ipaddress.ip_network(net) for net in UNTRUSTED])
UNTRUSTED_CLIENT = ipaddress.ip_address("127.0.0.1")

TRICKS = [
    # (RCPT argument, SMTPUTF8, expected reply prefix)
    ("<user%other.org@example.com>", False, DENIED),  # percent hack
    ("<user%other.org%example.com@example.com>", False, DENIED),
    ("<other.org!user@example.com>", False, DENIED),  # bang path
    ("<example.com!other.org!user@example.com>", False, DENIED),
    ("<@example.com:user@other.org>", False, DENIED),  # source route to a foreign mailbox
    ("<@example.com,@example.com:user@other.org>", False, DENIED),
    ('<"user@other.org"@example.com>', False, DENIED),  # quoted local parts with routing
    ('<"user%other.org"@example.com>', False, DENIED),
    ('<"other.org!user"@example.com>', False, DENIED),
    ('<"user\\@other.org"@example.com>', False, DENIED),  # quoted-pair
    ("<user\\@other.org@example.com>", False, SYNTAX),  # backslash outside quotes
    ("<user@[192.0.2.1]>", False, DENIED),  # address literals
    ("<user@[127.0.0.1]>", False, DENIED),
    ("<user@[IPv6:2001:db8::1]>", False, DENIED),
    ("<user@example.com.>", False, SYNTAX),  # trailing dots
    ("<user@other.org.>", False, SYNTAX),
    ("<user@example.com..>", False, SYNTAX),
    ("<user@example.com.other.org>", False, DENIED),  # suffix tricks
    ("<user@sub.example.com>", False, DENIED),
    ("<user@xample.com>", False, DENIED),
    ("<user@example.ｃｏｍ>", True, SYNTAX),  # fullwidth: IDNA mapping would change it
    ("<user@example.ｃｏｍ>", False, SYNTAX),
    ("<user@exаmple.com>", True, DENIED),  # Cyrillic a: a different domain
    ("<user@xn--exmple-4nf.com>", False, DENIED),  # its A-label
    ("<user@exa\u0301mple.com>", True, SYNTAX),  # not NFC
    ("<user@EXAMPLE.\u212aOM>", True, SYNTAX),  # Kelvin sign K
    ("<user＠other.org@example.com>", True, DENIED),  # fullwidth @ in the local part (NFKC: @)
    ("<user﹫other.org@example.com>", True, DENIED),  # small commercial at
    ("<user％other.org@example.com>", True, DENIED),  # fullwidth percent
    ("<user@>", False, SYNTAX),  # empty domain
    ("<@example.com>", False, SYNTAX),
    ('<""@example.com>', False, SYNTAX),  # empty local part
    ("<user@other.org@example.com>", False, SYNTAX),  # several @
    ("<a@b@example.com>", False, SYNTAX),
    ("<user@example.com@>", False, SYNTAX),
    ("<user@ex%ample.com>", False, SYNTAX),
    ("<user@example.com\\>", False, SYNTAX),
    ("<user@other.org>", False, DENIED),
]

LOCAL_FORMS = [
    ("<user@example.com>", False, "user@example.com"),
    ("<USER@EXAMPLE.COM>", False, "USER@EXAMPLE.COM"),  # case: the domain is local, the local part kept
    ("<user@Example.Com>", False, "user@Example.Com"),
    ("<@other.org:user@example.com>", False, "user@example.com"),  # source route ignored (RFC 5321 4.1.1.3)
    ('<"john smith"@example.com>', False, '"john smith"@example.com'),
    ('<"user"@example.com>', False, "user@example.com"),
    ("<jörg@example.com>", True, "jörg@example.com"),
]


@pytest.mark.parametrize(("argument", "smtputf8", "expected"), TRICKS)
async def test_relay_trick_is_refused(start_server, argument, smtputf8, expected):
    harness = await start_server(local_domains=LOCAL, relay_networks=UNTRUSTED)
    client = await harness.connect()
    mail = "MAIL FROM:<sender@remote.test>" + (" SMTPUTF8" if smtputf8 else "")
    assert (await client.last(mail)).startswith("250")
    reply = await client.last(f"RCPT TO:{argument}")
    assert reply.startswith(expected), reply
    if expected == DENIED:
        assert "Relay access denied" in reply


@pytest.mark.parametrize(("argument", "smtputf8", "recorded"), LOCAL_FORMS)
async def test_unambiguous_local_forms_are_accepted(start_server, argument, smtputf8, recorded):
    harness = await start_server(local_domains=LOCAL, relay_networks=UNTRUSTED)
    client = await harness.connect()
    mail = "MAIL FROM:<sender@remote.test>" + (" SMTPUTF8" if smtputf8 else "")
    assert (await client.last(mail)).startswith("250")
    assert (await client.last(f"RCPT TO:{argument}")) == "250 2.1.5 Ok"
    assert (await client.last("DATA")).startswith("354")
    await client.send(b"From: sender@remote.test\r\n\r\nhi\r\n.\r\n")
    assert (await client.read_reply())[-1].startswith("250 2.0.0")
    body = harness.publisher.published[0].body
    assert recorded.encode() in body  # queued as judged, nothing rewritten


async def test_relay_tricks_count_as_relay_denied(start_server, metrics):
    harness = await start_server(local_domains=LOCAL, relay_networks=UNTRUSTED)
    client = await harness.connect()
    before = metrics.rejected("relay_denied")
    assert (await client.last("MAIL FROM:<s@remote.test>")).startswith("250")
    assert (await client.last("RCPT TO:<user%other.org@example.com>")).startswith(DENIED)
    assert metrics.rejected("relay_denied") == before + 1


async def test_trusted_clients_may_use_routing_forms_which_are_kept_verbatim(start_server):
    harness = await start_server(local_domains=LOCAL, relay_networks=("127.0.0.0/8",))
    client = await harness.connect()
    assert (await client.last("MAIL FROM:<s@remote.test>")).startswith("250")
    assert (await client.last("RCPT TO:<user%other.org@example.com>")) == "250 2.1.5 Ok"
    assert (await client.last("RCPT TO:<user@[192.0.2.1]>")) == "250 2.1.5 Ok"


def test_policy_unit_decisions():
    assert POLICY.is_local("EXAMPLE.COM.")  # the policy strips the dot (the parser refuses it earlier)
    assert not POLICY.is_local("other.org.")
    assert POLICY.is_local("example.com") and not POLICY.is_local("[192.0.2.1]")
    assert canonical_domain("Bücher.Example") == "xn--bcher-kva.example"
    assert canonical_domain("straße.de") is None  # IDNA 2003 and 2008 disagree: refused
    assert has_routing('"a\\@b"') and has_routing("a％b") and not has_routing('"john smith"')
    assert not POLICY.accepts("user%other.org@example.com", UNTRUSTED_CLIENT)
    assert POLICY.accepts("user%other.org@example.com", UNTRUSTED_CLIENT, authenticated=True)
    assert POLICY.accepts("user%other.org@example.com", ipaddress.ip_address("10.1.2.3"))


# -- hypothesis: the address parser and relay decision ------------------------------------------------------

ROUTING = st.sampled_from(["@", "%", "!", "＠", "％", "！", "﹫", "\\@"])
ATOM = st.text(alphabet=st.sampled_from("abcXYZ019.-_+=~'"), min_size=1, max_size=8)
FOREIGN_DOMAINS = st.sampled_from(
    [
        "other.org", "other.org.", "example.com.other.org", "sub.example.com", "[192.0.2.1]", "[IPv6:::1]",
        "example.ｃｏｍ", "exаmple.com", "xn--exmple-4nf.com", "example.com..", "", "example", "com",
        "exa\u0301mple.com", "EXAMPLE.COM.evil", "example.co", "example.com:25", "example.com@other.org",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_never_raises_and_only_local_is_accepted(address):
    problem = check_address(address, smtputf8=True)
    accepted = POLICY.accepts(address, UNTRUSTED_CLIENT)
    if problem is None and accepted:
        local, _, domain = address.rpartition("@")
        assert canonical_domain(domain) == "example.com"
        assert not any(ch in "@%!" for ch in unicodedata.normalize("NFKC", local.strip('"').replace("\\", "")))


@settings(max_examples=300, deadline=None)
@given(ATOM, ROUTING, ATOM, st.booleans(), st.sampled_from(["example.com", "EXAMPLE.COM", "example.com."]))
def test_routing_in_the_local_part_is_never_local(left, routing, right, quoted, domain):
    local = f"{left}{routing}{right}"
    if quoted:
        local = '"' + local.replace('"', "") + '"'
    assert not POLICY.accepts(f"{local}@{domain}", UNTRUSTED_CLIENT)


@settings(max_examples=300, deadline=None)
@given(ATOM, FOREIGN_DOMAINS)
def test_foreign_domains_are_never_local(local, domain):
    assert not POLICY.accepts(f"{local}@{domain}", UNTRUSTED_CLIENT)


# -- hypothesis through the real server (a blocking client in a thread; the server runs in the test's loop) --


class LineClient:
    """A blocking SMTP client for hypothesis (which runs examples synchronously)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        assert self.command(b"EHLO fuzz.example").startswith(b"250")

    def reply(self) -> bytes:
        while True:
            line = self.file.readline(2000)
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                assert line.endswith(b"\r\n") and line[:3].isdigit(), line
                return line

    def command(self, line: bytes) -> bytes:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def one_line(data: bytes) -> bool:
    """Line framing is not the subject here (see the smuggling tests): no CR or LF inside the argument."""
    return b"\n" not in data and b"\r" not in data


ARGUMENT_BYTES = st.binary(max_size=120).filter(one_line)
ADDRESS_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(lambda local, domain: f"<{local}@{domain}>", st.text(max_size=20), st.text(max_size=20)),
    st.builds(
        lambda left, routing, right, domain: f"<{left}{routing}{right}@{domain}>",
        ATOM, ROUTING, ATOM, st.sampled_from(["example.com", "EXAMPLE.com", "other.org"]),
    ),
    st.builds(lambda local, domain: f"<{local}@{domain}>", ATOM, FOREIGN_DOMAINS),
)  # fmt: skip


def fuzz_rcpt(port: int, published: list[Published]) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(argument=st.one_of(ARGUMENT_BYTES, ADDRESS_TEXT.map(lambda text: text.encode("utf-8")).filter(one_line)))
    def run(argument: bytes) -> None:
        client = LineClient(port)
        try:
            assert client.command(b"MAIL FROM:<s@remote.test> SMTPUTF8").startswith(b"250")
            reply = client.command(b"RCPT TO:" + argument)
            if reply.startswith(b"2"):
                # Accepted: the address that will be queued must be a plain local mailbox.
                assert client.command(b"DATA").startswith(b"354")
                count = len(published)
                assert client.command(b"From: s@remote.test\r\n\r\nx\r\n.").startswith(b"250")
                assert len(published) == count + 1
            assert client.command(b"NOOP").startswith(b"250")  # the session survived
        finally:
            client.close()

    run()


def fuzz_mail(port: int) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(argument=ARGUMENT_BYTES)
    def run(argument: bytes) -> None:
        client = LineClient(port)
        try:
            reply = client.command(b"MAIL " + argument)
            assert reply[:1] in (b"2", b"4", b"5"), reply
            assert client.command(b"RSET").startswith(b"250")
        finally:
            client.close()

    run()


async def test_fuzz_rcpt_through_the_server(start_server):
    harness = await start_server(local_domains=LOCAL, relay_networks=UNTRUSTED)
    async with asyncio.timeout(60):
        await asyncio.to_thread(fuzz_rcpt, harness.port, harness.publisher.published)
    for published in harness.publisher.published:
        message = message_pb2.AcceptedMessage.FromString(published.body)
        for recipient in message.recipients:
            assert POLICY.is_local_address(recipient), recipient
            assert check_address(recipient, smtputf8=True) is None, recipient


async def test_fuzz_mail_through_the_server(start_server):
    harness = await start_server(local_domains=LOCAL, relay_networks=UNTRUSTED)
    async with asyncio.timeout(60):
        await asyncio.to_thread(fuzz_mail, harness.port)
