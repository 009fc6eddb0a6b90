"""Sender authorization: an authenticated user sends only as its own identities (MAIL FROM and From:)."""

import asyncio
import base64
import smtplib

import pytest

from kubemta_ingress.sender_identity import AuthenticatedUser, HeaderProblem, author_problem, header_fields
from kubemta_ingress.users import Identity

USERS = {"app": ("pw-app", ["app@example.com", "example.org"]), "noreply": ("pw-nr", ["@bücher.example"])}
IO_TIMEOUT = 5.0
SENDER_NOT_OWNED = "553 5.7.1 Sender address rejected: not owned by user app"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def logged_in(server, user: str = "app"):
    client = await server.harness.connect()
    assert (await client.last(f"AUTH PLAIN {plain(user, USERS[user][0])}")).startswith("235")
    return client


async def send_data(client, message: bytes, sender: str = "app@example.com") -> str:
    assert (await client.last(f"MAIL FROM:<{sender}>")).startswith("250")
    assert (await client.last("RCPT TO:<someone@other.org>")).startswith("250")
    assert (await client.last("DATA")).startswith("354")
    await client.send(message + b".\r\n")
    reply: str = (await client.read_reply())[-1]
    return reply


@pytest.mark.parametrize(
    ("sender", "owned"),
    [
        ("app@example.com", True),
        ("APP@Example.COM", True),
        ("anyone@example.org", True),
        ("x@EXAMPLE.ORG", True),
        ("other@example.com", False),
        ("app@sub.example.org", False),
        ("app@example.com.evil.test", False),
        ("app@[192.0.2.1]", False),
        ("ceo@bank.test", False),
    ],
)
async def test_mail_from_must_be_owned(start_auth_server, metrics, sender, owned):
    server = await start_auth_server(users=USERS)
    client = await logged_in(server)
    rejected = metrics.rejected("sender_not_owned")
    reply = await client.last(f"MAIL FROM:<{sender}>")
    if owned:
        assert reply == "250 2.1.0 Ok"
    else:
        assert reply == SENDER_NOT_OWNED
        assert metrics.rejected("sender_not_owned") == rejected + 1


async def test_null_sender_is_refused_for_authenticated_users(start_auth_server):
    server = await start_auth_server(users=USERS)
    client = await logged_in(server)
    assert await client.last("MAIL FROM:<>") == SENDER_NOT_OWNED


async def test_unicode_domain_identity(start_auth_server):
    server = await start_auth_server(users=USERS)
    client = await logged_in(server, "noreply")
    assert (await client.last("MAIL FROM:<a@xn--bcher-kva.example>")).startswith("250")
    assert (await client.last("RSET")).startswith("250")
    assert (await client.last("MAIL FROM:<a@bücher.example> SMTPUTF8")).startswith("250")
    assert (await client.last("RSET")).startswith("250")
    assert (await client.last("MAIL FROM:<a@bucher.example>")).startswith("553 5.7.1")


async def test_unauthenticated_relay_clients_are_not_restricted(start_auth_server):
    server = await start_auth_server(users=USERS, relay_networks=("127.0.0.0/8",))
    client = await server.harness.connect()
    message = b"From: ceo@bank.test\r\nFrom: other@else.test\r\n\r\nhi\r\n"
    assert (await send_data(client, message, sender="ceo@bank.test")).startswith("250 2.0.0 Ok: queued")


@pytest.mark.parametrize(
    ("headers", "reply"),
    [
        (b"From: app@example.com\r\n", "250"),
        (b'From: "App" <app@example.com>\r\n', "250"),
        (b"From: App <APP@EXAMPLE.COM>\r\n", "250"),
        (b"From: a@example.org, b@example.org\r\n", "250"),
        (b"From: App\r\n <app@example.com>\r\n", "250"),  # folded
        (b"From: app@example.com\r\nSender: app@example.com\r\n", "250"),
        (b"From: ceo@bank.test\r\n", "550 5.7.1 From header not owned by user"),
        (b'From: "app@example.com" <ceo@bank.test>\r\n', "550 5.7.1 From header not owned by user"),
        (b"From: app@example.com, ceo@bank.test\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: ceo@bank.test <app@example.com>\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: app@example.com <ceo@bank.test>\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: =?utf-8?q?ceo=40bank.test?=@example.org\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: undisclosed:;\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: friends: app@example.com;\r\n", "550 5.7.1 From header not owned by user"),
        (b"From: \r\n", "550 5.7.1 From header not owned by user"),
        (b"From: app@example.com\r\nFrom: ceo@bank.test\r\n", "550 5.7.1 Message has multiple From headers"),
        (b"From: app@example.com\r\nFrom: app@example.com\r\n", "550 5.7.1 Message has multiple From headers"),
        (b"From: app@example.com\r\nfROM : ceo@bank.test\r\n", "550 5.7.1 Message has multiple From headers"),
        (b"From: app@example.com\r\nnot a header\r\nFrom: ceo@bank.test\r\n", "550 5.7.1 Message has multiple"),
        (b"Subject: no author\r\n", "550 5.7.1 Message has no From header"),
        (b"From: app@example.com\r\nSender: ceo@bank.test\r\n", "550 5.7.1 Sender header not owned by user"),
        (b"From: app@example.com\r\nSender: a@example.org, b@example.org\r\n", "550 5.7.1 Sender header not"),
        (b"From: app@example.com\r\nSender: app@example.com\r\nSender: app@example.com\r\n", "550 5.7.1 Message has"),
    ],
)
async def test_author_headers_must_be_owned(start_auth_server, headers, reply):
    server = await start_auth_server(users=USERS)
    client = await logged_in(server)
    answer = await send_data(client, headers + b"Subject: test\r\n\r\nbody\r\nFrom: ceo@bank.test\r\n")
    assert answer.startswith(reply), answer
    assert len(server.publisher.published) == (1 if reply == "250" else 0)


async def test_header_rejections_are_counted(start_auth_server, metrics):
    server = await start_auth_server(users=USERS)
    client = await logged_in(server)
    not_owned, multiple = metrics.rejected("from_not_owned"), metrics.rejected("multiple_from")
    assert (await send_data(client, b"From: ceo@bank.test\r\n\r\nx\r\n")).startswith("550 5.7.1")
    assert (await send_data(client, b"From: app@example.com\r\nFrom: x@y.test\r\n\r\nx\r\n")).startswith("550")
    assert metrics.rejected("from_not_owned") == not_owned + 1
    assert metrics.rejected("multiple_from") == multiple + 1


async def test_smtplib_sender_authorization(start_auth_server):
    server = await start_auth_server(users=USERS)

    def submit(sender: str, author: str) -> str:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=IO_TIMEOUT) as client:
            client.login("app", "pw-app")
            message = f"From: {author}\r\nTo: x@other.org\r\nSubject: t\r\n\r\nhi\r\n"
            try:
                client.sendmail(sender, ["x@other.org"], message)
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                error = exc.smtp_error
                return f"{exc.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
            return "sent"

    assert await asyncio.to_thread(submit, "app@example.com", "App <app@example.com>") == "sent"
    assert await asyncio.to_thread(submit, "ceo@bank.test", "app@example.com") == SENDER_NOT_OWNED
    assert await asyncio.to_thread(submit, "app@example.com", "ceo@bank.test") == (
        "550 5.7.1 From header not owned by user"
    )
    assert len(server.publisher.published) == 1


def test_header_fields_scan_the_header_section_only():
    content = b"From: a@x.test\r\nX: y\r\n\tFrom: folded@x.test\r\n\r\nFrom: body@x.test\r\n"
    assert header_fields(content, b"from") == [b" a@x.test"]
    assert header_fields(b"\r\nFrom: a@x.test\r\n", b"from") == []
    assert header_fields(b"From: a@x.test", b"from") == [b" a@x.test"]


def test_author_problem_unit():
    user = AuthenticatedUser("app", (Identity.parse("app@example.com"),))
    assert author_problem(b"From: app@example.com\r\n\r\n", user) is None
    assert author_problem(b"From: app@example.com\r\n\r\n", AuthenticatedUser("x", ())) is HeaderProblem.FROM_NOT_OWNED
    assert author_problem(b"From: app@example.com\xff\r\n\r\n", user) is HeaderProblem.FROM_NOT_OWNED
    assert author_problem(b"From: app@example.com\r\n\r\n", user) is None
