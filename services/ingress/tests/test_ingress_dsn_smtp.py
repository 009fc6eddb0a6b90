"""RFC 3461 on the SMTP listeners: DSN offered after EHLO, RET/ENVID at MAIL and NOTIFY/ORCPT at RCPT read as the
client wrote them (case kept), refused with Postfix's replies, and carried on the published AcceptedMessage.

A real ingress server on 127.0.0.1:0 with the FakePublisher; smtplib as a real client, RawClient for byte-exact
hostile lines.
"""

import asyncio
import smtplib
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_ingress import replies
from kubemta_ingress.listeners import ListenerKind, ListenerPolicy
from kubemta_ingress.server import SessionOptions
from kubemta_ingress.tls import TlsContextStore
from tests.harness.ingress_kit import HOSTNAME, IO_TIMEOUT, RawClient, Servers, insecure_client_context, only_message

MESSAGE = b"From: a@example.net\r\nTo: user@example.org\r\nSubject: dsn\r\n\r\nHello.\r\n"
BAD_RET = "501 5.5.4 Bad RET parameter syntax"
BAD_ENVID = "501 5.5.4 Bad ENVID parameter syntax"
BAD_NOTIFY = "501 5.5.4 Bad NOTIFY parameter syntax"
BAD_ORCPT = "501 5.5.4 Bad ORCPT parameter syntax"
MAIL_UNKNOWN = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
RCPT_UNKNOWN = "555 5.5.4 RCPT TO parameters not recognized or not implemented"


async def data(client: RawClient, content: bytes = MESSAGE) -> str:
    assert (await client.last("DATA")).startswith("354 ")
    await client.send(content + b".\r\n")
    return (await client.read_reply())[-1]


def notify_of(dsn: message_pb2.RecipientDsn) -> tuple[bool, bool, bool, bool, bool]:
    return dsn.notify_given, dsn.notify_never, dsn.notify_success, dsn.notify_failure, dsn.notify_delay


# -- EHLO --


@pytest.mark.parametrize("kind", list(ListenerKind))
async def test_ehlo_offers_dsn_on_every_listener(servers: Servers, certificate: tuple[Path, Path], kind: ListenerKind):
    policy = ListenerPolicy.for_kind(kind)
    server, _ = await servers.start(options=SessionOptions(policy=policy, tls=TlsContextStore(*certificate)))
    tls = insecure_client_context() if policy.implicit_tls else None
    client = await RawClient.open(server.port, tls=tls)
    try:
        assert (await client.read_reply())[0].startswith("220 ")
        assert "250-DSN" in await client.command("EHLO client.example")
        if policy.require_starttls:  # submission: and after STARTTLS, where its mail comes
            assert await client.last("STARTTLS") == "220 2.0.0 Ready to start TLS"
            async with asyncio.timeout(IO_TIMEOUT):
                await client.writer.start_tls(insecure_client_context())
            assert "250-DSN" in await client.command("EHLO client.example")
        assert await client.command("HELO client.example") == [f"250 {HOSTNAME}"]  # no extensions after HELO
    finally:
        await client.close()


# -- the parameters travel with the message --


def _smtplib_transaction(port: int) -> tuple[bool, tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=IO_TIMEOUT) as smtp:
        smtp.ehlo()
        offered = smtp.has_extn("dsn")
        smtp.mail("sender@example.net", ["RET=HDRS", "ENVID=QQ314159"])
        first = smtp.rcpt("user@example.org", ["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob+2Bx@example.com"])
        second = smtp.rcpt("other@example.org")
        return offered, first, second, smtp.data(MESSAGE)


async def test_smtplib_parameters_are_published(start_server):
    harness = await start_server()
    offered, first, second, queued = await asyncio.to_thread(_smtplib_transaction, harness.port)
    assert offered and first == (250, b"2.1.5 Ok") and second == (250, b"2.1.5 Ok") and queued[0] == 250
    message = only_message(harness.publisher)
    assert message.ret == message_pb2.DSN_RET_HDRS and message.envid == "QQ314159"
    assert list(message.recipients) == ["user@example.org", "other@example.org"]
    assert set(message.recipient_dsn) == {"user@example.org"}  # the other recipient gave none
    dsn = message.recipient_dsn["user@example.org"]
    assert notify_of(dsn) == (True, False, True, False, True)
    assert (dsn.orcpt_type, dsn.orcpt_address) == ("rfc822", "bob+x@example.com")


async def test_lowercase_keywords_and_the_case_of_values_are_kept(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<sender@example.net> ret=full envid=Order+2B42abc SIZE=100") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> notify=never orcpt=RFC822;Bob.Smith@Example.ORG") == (
        "250 2.1.5 Ok"
    )
    assert (await data(client)).startswith("250 2.0.0 ")
    message = only_message(harness.publisher)
    assert message.ret == message_pb2.DSN_RET_FULL and message.envid == "Order+42abc"
    dsn = message.recipient_dsn["user@example.org"]
    assert notify_of(dsn) == (True, True, False, False, False)
    assert (dsn.orcpt_type, dsn.orcpt_address) == ("rfc822", "Bob.Smith@Example.ORG")


async def test_a_bounce_may_carry_parameters_too(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<> RET=HDRS ENVID=bounce-1") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=NEVER") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    message = only_message(harness.publisher)
    assert (message.sender, message.envid, message.ret) == ("", "bounce-1", message_pb2.DSN_RET_HDRS)
    assert message.recipient_dsn["user@example.org"].notify_never


async def test_utf8_orcpt_needs_smtputf8_for_raw_utf8(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> ORCPT=utf-8;jörg@example.com") == BAD_ORCPT
    assert await client.last("RCPT TO:<user@example.org> ORCPT=utf-8;j\\x{F6}rg@example.com") == "250 2.1.5 Ok"
    assert await client.last("RSET") == "250 2.0.0 OK"
    assert await client.last("MAIL FROM:<sender@example.net> SMTPUTF8") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> ORCPT=utf-8;jörg@example.com") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    dsn = only_message(harness.publisher).recipient_dsn["user@example.org"]
    assert (dsn.orcpt_type, dsn.orcpt_address) == ("utf-8", "jörg@example.com")
    assert not dsn.notify_given


async def test_the_longest_envid_and_orcpt_fit_the_command_lines(start_server):
    harness = await start_server()
    client = await harness.connect()
    envid = "E" * 100
    orcpt = "rfc822;" + "o" * (500 - len("rfc822;@example.com")) + "@example.com"
    assert len(orcpt) == 500
    sender = "<" + "s" * 64 + "@example.net>"
    assert await client.last(f"MAIL FROM:{sender} SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID={envid}") == (
        "250 2.1.0 Ok"
    )
    assert await client.last(f"RCPT TO:<user@example.org> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}") == (
        "250 2.1.5 Ok"
    )
    assert await client.last(f"RCPT TO:<other@example.org> ORCPT={orcpt}x") == BAD_ORCPT  # 501 characters
    assert await client.last(f"MAIL FROM:<a@example.net> ENVID={envid}E") == "503 5.5.1 Error: nested MAIL command"
    assert (await data(client)).startswith("250 2.0.0 ")
    message = only_message(harness.publisher)
    assert message.envid == envid and len(message.recipient_dsn["user@example.org"].orcpt_address) == 493
    assert await client.last(f"MAIL FROM:<a@example.net> ENVID={envid}E") == BAD_ENVID


# -- duplicates, the bare postmaster, a new transaction --


async def test_a_recipient_given_twice_keeps_its_first_parameters(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=NEVER") == "250 2.1.5 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=SUCCESS ORCPT=rfc822;x@example.com") == "250 2.1.5 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=BOGUS") == BAD_NOTIFY  # still checked
    assert await client.last("RCPT TO:<Postmaster> NOTIFY=SUCCESS") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    message = only_message(harness.publisher)
    postmaster = f"postmaster@{HOSTNAME}"
    assert list(message.recipients) == ["user@example.org", postmaster]
    assert notify_of(message.recipient_dsn["user@example.org"]) == (True, True, False, False, False)
    assert not message.recipient_dsn["user@example.org"].orcpt_address
    assert notify_of(message.recipient_dsn[postmaster]) == (True, False, True, False, False)


async def test_rset_and_the_next_transaction_start_without_parameters(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<sender@example.net> RET=FULL ENVID=first") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=SUCCESS") == "250 2.1.5 Ok"
    assert await client.last("RSET") == "250 2.0.0 OK"
    assert await client.last("MAIL FROM:<sender@example.net> ENVID=second") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<other@example.org> NOTIFY=DELAY") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org>") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    first, second = (message_pb2.AcceptedMessage.FromString(p.body) for p in harness.publisher.published)
    assert (first.ret, first.envid, set(first.recipient_dsn)) == (
        message_pb2.DSN_RET_UNSPECIFIED,
        "second",
        {"other@example.org"},
    )
    assert (second.ret, second.envid, dict(second.recipient_dsn)) == (message_pb2.DSN_RET_UNSPECIFIED, "", {})


# -- hostile values: exact replies, nothing published --

MAIL_REFUSALS = {
    "RET=BOGUS": BAD_RET,
    "RET": BAD_RET,
    "RET=": BAD_RET,
    "RET=FULL RET=HDRS": BAD_RET,
    "ret=full RET=FULL": BAD_RET,
    "ENVID=": BAD_ENVID,
    "ENVID": BAD_ENVID,
    "ENVID=" + "a" * 101: BAD_ENVID,
    "ENVID=a+2": BAD_ENVID,
    "ENVID=a+2b": BAD_ENVID,
    "ENVID=a=b": BAD_ENVID,
    "ENVID=+00": BAD_ENVID,
    "ENVID=a+0D+0Ab": BAD_ENVID,
    "ENVID=+C3+A9": BAD_ENVID,
    "ENVID=é": BAD_ENVID,
    "ENVID=x ENVID=x": BAD_ENVID,
    "RET=HDRS ENVID=+FF": BAD_ENVID,
    "NOTIFY=SUCCESS": MAIL_UNKNOWN,  # a RCPT parameter
    "ORCPT=rfc822;a@example.com": MAIL_UNKNOWN,
    "FOO=BAR RET=HDRS": MAIL_UNKNOWN,
}

RCPT_REFUSALS = {
    "NOTIFY=NEVER,SUCCESS": BAD_NOTIFY,
    "NOTIFY=": BAD_NOTIFY,
    "NOTIFY": BAD_NOTIFY,
    "NOTIFY=SUCCESS,,DELAY": BAD_NOTIFY,
    "NOTIFY=BOUNCE": BAD_NOTIFY,
    "NOTIFY=SUCCESS notify=DELAY": BAD_NOTIFY,
    "ORCPT=rfc822": BAD_ORCPT,
    "ORCPT=rfc822;": BAD_ORCPT,
    "ORCPT=;a@example.com": BAD_ORCPT,
    "ORCPT=rfc822;a=b@example.com": BAD_ORCPT,
    "ORCPT=rfc822;a+0D+0Ab@example.com": BAD_ORCPT,
    "ORCPT=rfc822;a+00@example.com": BAD_ORCPT,
    "ORCPT=utf-8;\\x{0}@example.com": BAD_ORCPT,
    "ORCPT=rfc822;" + "a" * 494: BAD_ORCPT,
    "ORCPT=rfc822;a@x ORCPT=rfc822;a@x": BAD_ORCPT,
    "RET=HDRS": RCPT_UNKNOWN,  # a MAIL parameter
    "ENVID=x": RCPT_UNKNOWN,
    "FOO NOTIFY=NEVER": RCPT_UNKNOWN,
}


async def test_hostile_mail_parameters_get_exact_replies_and_nothing_is_published(start_server):
    harness = await start_server()
    client = await harness.connect()
    for parameters, reply in MAIL_REFUSALS.items():
        assert await client.last(f"MAIL FROM:<sender@example.net> {parameters}") == reply, parameters
        assert await client.last("RCPT TO:<user@example.org>") == "503 5.5.1 Error: need MAIL command", parameters
    assert harness.publisher.published == []


async def test_hostile_rcpt_parameters_get_exact_replies_and_nothing_is_published(start_server):
    harness = await start_server()
    client = await harness.connect()
    for parameters, reply in RCPT_REFUSALS.items():
        assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
        assert await client.last(f"RCPT TO:<user@example.org> {parameters}") == reply, parameters
        assert await client.last("DATA") == "503 5.5.1 Error: need RCPT command", parameters
        assert await client.last("RSET") == "250 2.0.0 OK"
    assert harness.publisher.published == []


async def test_byte_exact_hostile_lines(start_server):
    harness = await start_server()
    client = await harness.connect()
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    for line in [
        b"RCPT TO:<user@example.org> ORCPT=rfc822;a\x00b@example.com",
        b"RCPT TO:<user@example.org> ORCPT=rfc822;a\rb@example.com",
    ]:
        assert await client.last(line) == replies.BARE_LINE_ENDING_COMMAND
    assert await client.last(b"RCPT TO:<user@example.org> ORCPT=utf-8;a\xffb@example.com") == BAD_ORCPT
    assert (await client.last(b"RCPT TO:<user@example.org> ORCPT=rfc822;a b@example.com")).startswith("501 5.5.4 ")
    assert await client.last("DATA") == "503 5.5.1 Error: need RCPT command"
    assert await client.last("RSET") == "250 2.0.0 OK"
    assert await client.last("MAIL FROM:<sender@example.net> SMTPUTF8") == "250 2.1.0 Ok"
    assert await client.last(b"RCPT TO:<user@example.org> ORCPT=utf-8;a\xffb@example.com") == BAD_ORCPT  # not UTF-8
    assert await client.last("DATA") == "503 5.5.1 Error: need RCPT command"
    assert harness.publisher.published == []


async def test_no_parameters_after_helo(start_server):
    """After HELO a command has no parameters at all (RFC 5321 section 4.1.1.11): refused as before DSN."""
    harness = await start_server()
    client = await harness.connect(ehlo=None)
    assert await client.command("HELO client.example") == [f"250 {HOSTNAME}"]
    assert await client.last("MAIL FROM:<sender@example.net> RET=HDRS") == "501 5.5.4 Syntax: MAIL FROM: <address>"
    assert await client.last("MAIL FROM:<sender@example.net>") == "250 2.1.0 Ok"
    assert await client.last("RCPT TO:<user@example.org> NOTIFY=NEVER") == "501 5.5.4 Syntax: RCPT TO: <address>"
    assert await client.last("RCPT TO:<user@example.org>") == "250 2.1.5 Ok"
    assert (await data(client)).startswith("250 2.0.0 ")
    message = only_message(harness.publisher)
    assert (message.envid, message.ret, dict(message.recipient_dsn)) == ("", message_pb2.DSN_RET_UNSPECIFIED, {})
