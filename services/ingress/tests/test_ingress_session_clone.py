"""`IngressSMTP.from_blueprint`: a connection built from a listener's Blueprint is what aiosmtpd's constructor builds.

The Blueprint skips aiosmtpd's per-connection reflection, so it must keep up with what that
constructor sets: these tests fail when aiosmtpd (or IngressSMTP) adds per-connection
state that the Blueprint would not set, or would share between connections.
"""

import asyncio
import collections
from types import MethodType
from typing import cast

from kubemta_ingress.session import IngressSMTP, SessionOptions
from kubemta_ingress.session.aiosmtpd_contract import Blueprint, BoundCommands

# What connections of one listener may share: configuration, the handler, the loop and its callbacks.
SHARED = {
    "__ident__", "_auth_callback", "_auth_require_tls", "_auth_required", "_authenticator", "_decode_data",
    "_ehlo_hook_ver", "_enforce_call_limit", "_handle_hooks", "_loop", "_on_close", "_on_open", "_options",
    "_policy", "_proxy_timeout", "_timeout_duration", "data_size_limit", "enable_SMTPUTF8", "event_handler",
    "hostname", "loop", "require_starttls", "tls_context", "_over_ssl", "_reject_connection", "_paused",
    "_connection_lost", "_source_traceback",
}  # fmt: skip
IMMUTABLE = (str, bytes, int, float, bool, type(None))


class Handler:
    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def reader_of(connection: IngressSMTP) -> object:
    """The connection's StreamReader (StreamReaderProtocol keeps it behind a weak reference)."""
    return vars(connection)["_stream_reader_wr"]()


async def build(**options: object) -> tuple[IngressSMTP, IngressSMTP, IngressSMTP]:
    def ignore(session: IngressSMTP) -> None:
        return None

    kwargs = {"hostname": "mx.example", "data_size_limit": 1000, "timeout": 5.0, "on_open": ignore, "on_close": ignore}
    template = IngressSMTP(Handler(), **kwargs, options=SessionOptions(**options))  # type: ignore[arg-type]
    built = IngressSMTP(Handler(), **kwargs, options=template._options)  # type: ignore[arg-type]
    return template, built, like(template)


def like(template: IngressSMTP) -> IngressSMTP:
    """A connection of the template's listener, built as SmtpServer builds all but the first."""
    return IngressSMTP.from_blueprint(
        Blueprint.of(template), options=template._options, on_open=template._on_open, on_close=template._on_close
    )


async def test_a_copy_has_exactly_the_attributes_the_constructor_sets() -> None:
    _, built, copy = await build()
    assert sorted(vars(copy)) == sorted(vars(built))
    for name, value in vars(built).items():
        if name == "_smtp_methods":  # bound as commands are looked up
            assert isinstance(vars(copy)[name], BoundCommands)
            continue
        assert type(vars(copy)[name]) is type(value), name


async def test_a_copy_shares_only_configuration_with_its_template() -> None:
    template, _, copy = await build()
    for name, value in vars(copy).items():
        if name in SHARED or isinstance(value, IMMUTABLE):
            continue
        assert value is not vars(template)[name], f"{name} is shared between connections"


async def test_the_copys_methods_are_bound_to_the_copy() -> None:
    template, built, copy = await build()
    assert set(copy._smtp_methods) == set(built._smtp_methods)
    for method in copy._smtp_methods.values():
        assert isinstance(method, MethodType) and method.__self__ is copy
    assert set(copy._auth_methods) == set(built._auth_methods)
    for mechanism in copy._auth_methods.values():
        assert cast(MethodType, mechanism.method).__self__ is (copy if mechanism.is_builtin else template.event_handler)
    assert vars(copy)["_client_connected_cb"].__self__ is copy
    assert reader_of(copy) is not reader_of(template)


async def test_per_connection_containers_start_empty_and_apart() -> None:
    template, _, copy = await build()
    copy.command_size_limits["MAIL"] = 1
    assert template.command_size_limits["MAIL"] != 1
    assert isinstance(copy.command_size_limits, collections.defaultdict)
    assert copy._errors is not template._errors


async def test_two_copies_do_not_share_the_stream() -> None:
    template, _, first = await build()
    second = like(template)
    assert reader_of(first) is not reader_of(second)
    assert vars(first)["_closed"] is not vars(second)["_closed"]
    await asyncio.sleep(0)


async def test_the_copys_commands_are_looked_up_as_aiosmtpd_looks_them_up() -> None:
    _, built, copy = await build()
    assert list(copy._smtp_methods) == list(built._smtp_methods)  # HELP lists them in this order
    assert copy._smtp_methods.get("NOOP") == MethodType(type(copy).smtp_NOOP, copy)
    assert copy._smtp_methods.get("NOSUCH") is None and copy._smtp_methods.get("NOSUCH", 1) == 1
    assert [name for name, _ in copy._smtp_methods.items()] == list(built._smtp_methods)
