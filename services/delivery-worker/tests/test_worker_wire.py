"""The one SMTP client's pieces that are not a conversation: the aiosmtplib internals it lives on
(pinned to aiosmtplib 5.1 in pyproject.toml; these tests fail when an upgrade changes them), the
dialects (SMTP, LMTP) and the transport registry keyed by the route's kind."""

import asyncio
import importlib.metadata
import inspect

import aiosmtplib
import aiosmtplib.email
import aiosmtplib.protocol
import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker import connection, lmtp, smtp, wire
from kubemta_delivery_worker.dialect import LMTP_DIALECT, SMTP_DIALECT
from kubemta_delivery_worker.registry import TRANSPORTS, transport_for


def test_aiosmtplib_is_the_pinned_minor_version():
    assert importlib.metadata.version("aiosmtplib").split(".")[:2] == ["5", "1"]


def test_wire_reads_aiosmtplib_protocol_internals():
    # wire.py: ReplyGroup swaps SMTP.protocol's transport protocol and writes through SMTPProtocol.write.
    protocol = aiosmtplib.protocol.SMTPProtocol
    assert issubclass(protocol, asyncio.BaseProtocol)
    assert list(inspect.signature(protocol.write).parameters) == ["self", "data"]
    for method in ("data_received", "eof_received", "connection_lost", "pause_writing", "resume_writing"):
        assert callable(getattr(protocol, method))
    assert "self.transport" in inspect.getsource(protocol.connection_made)
    assert "self.protocol = protocol" in inspect.getsource(aiosmtplib.SMTP)
    # The reader's limits and errors are aiosmtplib's own (wire.py imports them).
    assert aiosmtplib.protocol.MAX_LINE_LENGTH == 8192
    assert aiosmtplib.protocol.MAX_RESPONSE_LENGTH == 8192 * 4


def test_command_lines_are_those_aiosmtplib_sends():
    assert aiosmtplib.email.quote_address("a@b.test") == "<a@b.test>"
    assert wire.command_line(b"MAIL FROM:", "a@b.test", ["BODY=8BITMIME"], "ascii") == (
        b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\n"
    )
    assert aiosmtplib.protocol.COMMAND_INJECTION_REGEX.search(b"x\ry")
    with pytest.raises(ValueError):
        wire.command_line(b"MAIL FROM:", "a@b.test", ["X=\x01"], "ascii")


def test_session_relies_on_aiosmtplib_timeout_and_ehlo_reply():
    # connection._DeadlineSMTP turns SMTP.timeout (the default command timeout) into a property.
    source = inspect.getsource(aiosmtplib.SMTP)
    assert "self.timeout = timeout" in source
    assert "timeout=self.timeout if timeout is Default.token else timeout" in source
    # LHLO keeps its reply the way EHLO does: the last_ehlo_response setter parses the extensions.
    ehlo = aiosmtplib.SMTP.last_ehlo_response
    assert isinstance(ehlo, property) and ehlo.fset is not None
    client = connection._DeadlineSMTP(lambda seconds: min(seconds, 1.5), hostname="127.0.0.1", timeout=30.0)
    assert client.timeout == 1.5
    client.last_ehlo_response = aiosmtplib.SMTPResponse(250, "lmtp.test\nPIPELINING\nSIZE 1000\nAUTH PLAIN")
    assert client.supports_extension("size") and client.server_auth_methods == ["plain"]
    assert list(inspect.signature(aiosmtplib.SMTP.__init__).parameters)[1:4] == ["hostname", "port", "username"]
    assert "socket_path" in inspect.signature(aiosmtplib.SMTP.__init__).parameters


def test_dialects_differ_only_where_lmtp_does():
    host = message_pb2.RouteHost(hostname="mx.test.", address="192.0.2.1")
    assert SMTP_DIALECT.label(host) == "mx.test.[192.0.2.1]:25"
    assert LMTP_DIALECT.label(host) == "mx.test.[192.0.2.1]:24"
    assert LMTP_DIALECT.label(message_pb2.RouteHost(unix_socket="/run/lmtp")) == "/run/lmtp"
    assert LMTP_DIALECT.remote_mta(message_pb2.RouteHost(unix_socket="/run/lmtp")) == "/run/lmtp"
    assert SMTP_DIALECT.remote_mta(host) == "mx.test"
    assert SMTP_DIALECT.data_replies(["a", "b"]) == [["a", "b"]]
    assert LMTP_DIALECT.data_replies(["a", "b"]) == [["a"], ["b"]]
    assert (SMTP_DIALECT.hello, LMTP_DIALECT.hello) == ("EHLO", "LHLO")


def test_registry_is_keyed_by_the_route_kind():
    assert transport_for(message_pb2.TRANSPORT_KIND_SMTP) is smtp.TRANSPORT
    assert transport_for(message_pb2.TRANSPORT_KIND_LMTP) is lmtp.TRANSPORT
    assert transport_for(message_pb2.TRANSPORT_KIND_UNSPECIFIED) is smtp.TRANSPORT
    assert set(TRANSPORTS) == {message_pb2.TRANSPORT_KIND_SMTP, message_pb2.TRANSPORT_KIND_LMTP}
    assert smtp.TRANSPORT.pooled and not lmtp.TRANSPORT.pooled
