"""AUTH LOGIN prompts: `334 VXNlcm5hbWU6` ("Username:") and `334 UGFzc3dvcmQ6` ("Password:").

Clients that match the prompt text expect these (other servers send them), not aiosmtpd's
"User Name\\0" and "Password\\0". Checked on the wire with a raw client (on the listener's first
connection and on a later one, which is built from the first's Blueprint), with a client
that answers by the decoded prompt text, and with swaks over implicit TLS on the real session class.
"""

import asyncio
import base64
import smtplib
from pathlib import Path

from kubemta_ingress.auth import UsersAuthenticator
from kubemta_ingress.listeners import ListenerKind, ListenerPolicy
from kubemta_ingress.server import IngressSMTP, SessionOptions
from kubemta_ingress.tls import TlsContextStore
from kubemta_ingress.users import Identity, User, UsersFile, hash_password, render
from tests.harness.ingress_kit import IO_TIMEOUT, Servers, insecure_client_context
from tests.harness.tools import swaks

PASSWORD = "s3cret-pass"
USERS = {"app": (PASSWORD, ["app@example.com"])}
USERNAME_PROMPT = "334 VXNlcm5hbWU6"  # base64 of "Username:"
PASSWORD_PROMPT = "334 UGFzc3dvcmQ6"  # base64 of "Password:"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_login_prompts_on_the_wire(start_auth_server):
    server = await start_auth_server(users=USERS)
    for _ in range(2):  # the listener's first session, then one built from its Blueprint
        client = await server.harness.connect()
        assert await client.command("AUTH LOGIN") == [USERNAME_PROMPT]
        assert await client.command(b64("app")) == [PASSWORD_PROMPT]
        assert await client.last(b64(PASSWORD)) == "235 2.7.0 Authentication successful"
    # With the username as the initial response, only the password is asked for.
    client = await server.harness.connect()
    assert await client.command(f"AUTH LOGIN {b64('app')}") == [PASSWORD_PROMPT]
    assert await client.last(b64("wrong")) == "535 5.7.8 Authentication credentials invalid"


async def test_a_client_answering_by_prompt_text_logs_in(start_auth_server):
    """Such a client answers "Username:" with the user name and "Password:" with the password, nothing else."""
    server = await start_auth_server(users=USERS)
    client = await server.harness.connect()
    answers = {b"Username:": "app", b"Password:": PASSWORD}
    reply = await client.last("AUTH LOGIN")
    while reply.startswith("334 "):
        prompt = base64.b64decode(reply[4:], validate=True)
        assert prompt in answers, f"unexpected prompt {prompt!r}"
        reply = await client.last(b64(answers.pop(prompt)))
    assert reply == "235 2.7.0 Authentication successful"
    assert answers == {}


def test_the_session_class_carries_the_prompts():
    assert IngressSMTP.AuthLoginUsernameChallenge == "Username:"
    assert IngressSMTP.AuthLoginPasswordChallenge == "Password:"


async def test_swaks_auth_login_over_implicit_tls(servers: Servers, certificate: tuple[Path, Path], tmp_path: Path):
    """The production session class (no test subclass), TLS as in production, a real client."""
    path = tmp_path / "users"
    path.write_text(
        render([User("app", hash_password(PASSWORD, log2_n=10), (Identity.parse("app@example.com"),))]),
        encoding="utf-8",
    )
    authenticator = UsersAuthenticator(UsersFile(path), failure_limit=5, failure_window=900.0, failure_delay=0.0)
    options = SessionOptions(
        policy=ListenerPolicy.for_kind(ListenerKind.SMTPS),
        tls=TlsContextStore(*certificate),
        authenticator=authenticator,
    )
    server, publisher = await servers.start(options=options, local_domains=("example.com",), relay_networks=())
    process = await asyncio.create_subprocess_exec(
        swaks(), "--server", f"127.0.0.1:{server.port}", "--tlsc", "--auth", "LOGIN", "--auth-user", "app",
        "--auth-password", PASSWORD, "--from", "app@example.com", "--to", "x@other.org",
        "--header", "From: app@example.com", "--helo", "client.example", "--timeout", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert USERNAME_PROMPT in text and PASSWORD_PROMPT in text
    assert "235 2.7.0 Authentication successful" in text and "250 2.0.0 Ok: queued as" in text
    assert len(publisher.published) == 1


async def test_smtplib_login_still_works_over_tls(servers: Servers, certificate: tuple[Path, Path], tmp_path: Path):
    path = tmp_path / "users"
    path.write_text(render([User("app", hash_password(PASSWORD, log2_n=10), ())]), encoding="utf-8")
    authenticator = UsersAuthenticator(UsersFile(path), failure_limit=5, failure_window=900.0, failure_delay=0.0)
    options = SessionOptions(
        policy=ListenerPolicy.for_kind(ListenerKind.SMTPS),
        tls=TlsContextStore(*certificate),
        authenticator=authenticator,
    )
    server, _ = await servers.start(options=options)

    def login() -> tuple[int, bytes]:
        context = insecure_client_context()
        with smtplib.SMTP_SSL("127.0.0.1", server.port, timeout=IO_TIMEOUT, context=context) as client:
            client.ehlo("client.example")
            client.user, client.password = "app", PASSWORD
            return client.auth("LOGIN", client.auth_login)

    assert await asyncio.to_thread(login) == (235, b"2.7.0 Authentication successful")
