"""The three listeners' fixed policies, and each session knowing the listener it came in on."""

import asyncio

import pytest

from kubemta_ingress.listeners import IngressSession, ListenerKind, ListenerPolicy, session_listener
from kubemta_ingress.server import SessionOptions
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import build_server


def test_policies():
    mx, submission, smtps = (ListenerPolicy.for_kind(kind) for kind in ListenerKind)
    assert (mx.implicit_tls, mx.require_starttls, mx.auth_required) == (False, False, False)
    assert (submission.implicit_tls, submission.require_starttls, submission.auth_required) == (False, True, True)
    assert (smtps.implicit_tls, smtps.require_starttls, smtps.auth_required) == (True, False, True)


@pytest.mark.parametrize("kind", [ListenerKind.SMTP, ListenerKind.SUBMISSION])
async def test_sessions_know_their_listener(kind):
    server = build_server(
        FakePublisher(),
        max_recipients=10,
        max_message_size=1000,
        timeout=5.0,
        options=SessionOptions(policy=ListenerPolicy.for_kind(kind)),
    )
    await server.start()
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert (await reader.readline()).startswith(b"220 ")
        (protocol,) = server._sessions
        assert isinstance(protocol.session, IngressSession)
        assert session_listener(protocol.session) is kind
        assert protocol.session.socket_peer == protocol.session.peer
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop(drain_seconds=1.0)
    assert session_listener(None) is None
