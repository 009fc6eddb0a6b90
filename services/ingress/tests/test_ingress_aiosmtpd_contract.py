"""The aiosmtpd internals the session relies on (session/aiosmtpd_contract.py) exist with the shapes it uses.

aiosmtpd is pinned to one minor version; an upgrade that renames, re-signs or retypes any of
these fails here, before it changes what a session does.
"""

import asyncio
import importlib.metadata
import inspect

from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.smtp import SMTP

from kubemta_ingress.session import IngressSMTP, SessionOptions
from kubemta_ingress.session import aiosmtpd_contract as contract


class Handler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def parameters(function: object) -> tuple[str, ...]:
    assert callable(function)
    return tuple(name for name in inspect.signature(function).parameters if name != "self")


def test_the_installed_aiosmtpd_is_the_pinned_minor_version() -> None:
    version = importlib.metadata.version("aiosmtpd")
    assert version.split(".")[:2] == contract.PINNED_MINOR.split(".")


def test_the_pin_in_pyproject_matches_the_contract() -> None:
    requirements = importlib.metadata.requires("kubemta-ingress") or []
    (aiosmtpd,) = [line for line in requirements if line.startswith("aiosmtpd")]
    major, minor = contract.PINNED_MINOR.split(".")
    assert f"<{major}.{int(minor) + 1}" in aiosmtpd


def test_overridden_methods_exist_in_aiosmtpd_with_the_same_parameters() -> None:
    for name, expected in contract.OVERRIDDEN.items():
        assert parameters(getattr(SMTP, name)) == expected, name
        assert getattr(IngressSMTP, name) is not getattr(SMTP, name), f"{name} is listed but not overridden"
        assert parameters(getattr(IngressSMTP, name)) == expected, name


def test_called_methods_exist_with_the_parameters_used() -> None:
    for name, expected in contract.CALLED.items():
        assert parameters(getattr(SMTP, name)) == expected, name


def test_the_hook_call_and_auth_table_keep_their_shape() -> None:
    assert aiosmtpd_smtp._AuthMechAttr._fields == ("method", "is_builtin")
    assert isinstance(SMTP.command_size_limits, dict)  # shared by all connections: the session has its own
    assert SMTP.line_length_limit == 1001


async def test_the_constructor_sets_the_attributes_with_the_types_used() -> None:
    def ignore(session: object) -> None:
        return None

    connection = IngressSMTP(
        Handler(),  # type: ignore[arg-type]
        hostname="mx.example",
        data_size_limit=1000,
        timeout=5.0,
        on_open=ignore,
        on_close=ignore,
        options=SessionOptions(),
    )
    attributes = vars(connection)
    for name, kind in contract.ATTRIBUTES.items():
        assert name in attributes, name
        assert isinstance(attributes[name], kind), (name, type(attributes[name]))
    for mechanism in connection._auth_methods.values():
        assert isinstance(mechanism, aiosmtpd_smtp._AuthMechAttr)
    for name in contract.CONNECTION_ATTRIBUTES:
        assert name not in attributes, f"{name} is set before the connection is made"


async def test_cb_client_connected_stores_the_reader_and_the_writer() -> None:
    def ignore(session: object) -> None:
        return None

    connection = IngressSMTP(
        Handler(),  # type: ignore[arg-type]
        hostname="mx.example",
        data_size_limit=1000,
        timeout=5.0,
        on_open=ignore,
        on_close=ignore,
    )
    reader = asyncio.StreamReader()
    writer = object()
    connection._cb_client_connected(reader, writer)  # type: ignore[arg-type]
    assert connection._reader is reader
    assert vars(connection)["_writer"] is writer
    for name in contract.CONNECTION_ATTRIBUTES:
        assert name in vars(connection)


def test_the_stream_readers_buffer_is_a_bytearray() -> None:
    async def read() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"EHLO x\r\n")
        assert contract.buffered(reader) == bytearray(b"EHLO x\r\n")
        contract.buffered(reader).clear()
        reader.feed_eof()
        assert await reader.read() == b""

    asyncio.run(read())


def test_the_stream_reader_internals_exist_with_the_shapes_used() -> None:
    async def check() -> None:
        reader = asyncio.StreamReader()
        for name, shape in contract.STREAM_READER.items():
            value = getattr(reader, name)
            if isinstance(shape, type):
                assert isinstance(value, shape), (name, type(value))
            else:
                assert parameters(value) == shape, name
        assert parameters(asyncio.StreamReader.readuntil) == ("separator",)

    asyncio.run(check())
