"""Every private part of aiosmtpd (and of asyncio's streams) the session relies on, in one place.

aiosmtpd is pinned to the minor version below (services/ingress/pyproject.toml);
`test_ingress_aiosmtpd_contract.py` checks that each name listed here exists with the shape
given, so an upgrade that changes one fails there before it changes a session's behaviour.

- `OVERRIDDEN`: the `SMTP` methods the session replaces (most call the original through
  `super()`), with their parameters.
- `CALLED`: the private `SMTP` methods the session calls.
- `ATTRIBUTES`: the private attributes the session reads or sets: the reader and writer
  `_cb_client_connected` stores, the handler task, the TLS layer and the transport under
  it (set as aiosmtpd's `smtp_STARTTLS` sets them), the idle timeout; and the ones
  `Blueprint` copies (what aiosmtpd's constructor computes once per listener).
- `STREAM_READER`: asyncio's `StreamReader` internals: `_buffer`, the bytes read but not
  yet consumed (`buffered`), which STARTTLS discards and implicit TLS hands to the TLS
  layer; and those stream_reader.py's DATA reader works with. aiosmtpd reads command
  lines with `readuntil(b"\n")`, which stream_reader.py checks.

`Blueprint` replaces aiosmtpd's per-connection reflection: its constructor looks up the
command, hook and AUTH methods with `inspect.getmembers` and `dir` on every connection
(~14% of the ingress' CPU time under load), though the answer is the same for every
connection of a listener. The first connection of a listener is built by that
constructor; `Blueprint.of` reads what it computed, by name, and `Blueprint.build` sets
exactly what the constructor sets on the later ones, with the methods bound to each.
"""

import asyncio
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, AuthCallbackType, AuthenticatorType, _AuthMechAttr

PINNED_MINOR = "1.4"
"""The aiosmtpd release line whose internals this module describes."""

OVERRIDDEN: Mapping[str, tuple[str, ...]] = {
    "_call_handler_hook": ("command", "args"),
    "_cb_client_connected": ("reader", "writer"),
    "_create_envelope": (),
    "_create_session": (),
    "_getaddr": ("arg",),
    "_handle_client": (),
    "_reset_timeout": ("duration",),
    "_timeout_cb": (),
    "connection_made": ("transport",),
    "connection_lost": ("error",),
    "data_received": ("data",),
    "handle_exception": ("error",),
    "push": ("status",),
    "smtp_AUTH": ("arg",),
    "smtp_DATA": ("arg",),
    "smtp_EHLO": ("hostname",),
    "smtp_HELO": ("hostname",),
    "smtp_MAIL": ("arg",),
    "smtp_RCPT": ("arg",),
    "smtp_STARTTLS": ("arg",),
}
CALLED: Mapping[str, tuple[str, ...]] = {
    "_reset_timeout": ("duration",),
    "_set_post_data_state": (),
    "check_auth_needed": ("caller_method",),
    "check_helo_needed": ("helo",),
}
CONNECTION_ATTRIBUTES = (
    "_reader",
    "_writer",
)
"""Set by `_cb_client_connected` once the connection is made."""
ATTRIBUTES: Mapping[str, type | tuple[type, ...]] = {
    "_handler_coroutine": type(None),
    "_tls_protocol": type(None),
    "_original_transport": type(None),
    "_timeout_handle": type(None),
    "_tls_handshake_okay": bool,
    "_timeout_duration": (int, float),
    "_auth_require_tls": bool,
    "_auth_required": bool,
    "_authenticator": object,
    "_auth_callback": object,
    "_auth_methods": dict,
    "_smtp_methods": dict,
    "_handle_hooks": dict,
    "_ehlo_hook_ver": (str, type(None)),
    "_enforce_call_limit": bool,
    "_decode_data": bool,
    "_proxy_timeout": (int, float, type(None)),
    "__ident__": str,
}
STREAM_READER: Mapping[str, tuple[str, ...] | type] = {
    "_buffer": bytearray,
    "_limit": int,
    "_eof": bool,
    "_wait_for_data": ("func_name",),
    "_maybe_resume_transport": (),
}
"""asyncio.StreamReader's attributes (types) and methods (parameters) the session's reader uses."""
PRIVATE_TYPES = ("_AuthMechAttr",)
"""aiosmtpd's AUTH table entries (`method`, `is_builtin`), rebuilt by `Blueprint.build`."""
"""Set by the constructor (the types as the ingress builds a session)."""


def buffered(reader: asyncio.StreamReader) -> bytearray:
    """The bytes the reader holds that nothing consumed yet (asyncio's `StreamReader._buffer`)."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    return buffer


class BoundCommands(Mapping[str, Any]):
    """A connection's `_smtp_methods` (command -> its bound `smtp_*` method), each bound when it is looked up.

    aiosmtpd builds a dict of every command's bound method per connection (~20 `getattr`s, ~2% of the
    ingress' CPU time under load) though a session dispatches five or six; aiosmtpd only calls `get` (a
    command, HELP's argument) and `items` (HELP's list) on it.
    """

    __slots__ = ("_names", "_smtp")

    def __init__(self, smtp: SMTP, names: Mapping[str, str]) -> None:
        self._smtp = smtp
        self._names = names
        """Command -> the name of its method (`smtp_<command>`)."""

    def __getitem__(self, command: str) -> Any:
        return getattr(self._smtp, self._names[command])

    def get(self, command: str, default: Any = None) -> Any:
        name = self._names.get(command)
        return default if name is None else getattr(self._smtp, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True, slots=True)
class Blueprint:
    """What aiosmtpd's constructor computes that is the same for every connection of a listener."""

    ident: str
    event_handler: Any
    hostname: str
    data_size_limit: int | None
    enable_smtputf8: bool
    decode_data: bool
    require_starttls: ssl.SSLContext | bool | None  # aiosmtpd: `tls_context and require_starttls`
    timeout_duration: float
    auth_require_tls: bool
    auth_required: bool
    proxy_timeout: float | None
    authenticator: AuthenticatorType | None
    auth_callback: AuthCallbackType | None
    handle_hooks: Mapping[str, Callable[..., Any]]
    ehlo_hook_ver: str | None
    smtp_commands: Mapping[str, str]
    """Command -> the name of its method, in aiosmtpd's order."""
    auth_mechanisms: tuple[tuple[str, Any, bool], ...]
    """In aiosmtpd's order: (name, the handler's bound method or the session's method name, builtin)."""

    @classmethod
    def of(cls, smtp: SMTP) -> "Blueprint":
        """Read from a connection aiosmtpd's constructor built."""
        assert not smtp._enforce_call_limit, "command call limits are per connection state"
        return cls(
            ident=smtp.__ident__,
            event_handler=smtp.event_handler,
            hostname=smtp.hostname,
            data_size_limit=smtp.data_size_limit,
            enable_smtputf8=smtp.enable_SMTPUTF8,
            decode_data=smtp._decode_data,
            require_starttls=smtp.require_starttls,
            timeout_duration=smtp._timeout_duration,
            auth_require_tls=smtp._auth_require_tls,
            auth_required=smtp._auth_required,
            proxy_timeout=smtp._proxy_timeout,
            authenticator=smtp._authenticator,
            auth_callback=smtp._auth_callback,
            handle_hooks=dict(smtp._handle_hooks),
            ehlo_hook_ver=smtp._ehlo_hook_ver,
            smtp_commands={name: f"smtp_{name}" for name in smtp._smtp_methods},
            auth_mechanisms=tuple(
                (name, mechanism.method.__name__ if mechanism.is_builtin else mechanism.method, mechanism.is_builtin)
                for name, mechanism in smtp._auth_methods.items()
            ),
        )

    def build[S: SMTP](self, cls: type[S], loop: asyncio.AbstractEventLoop) -> S:
        """A new connection of `cls`, set up as aiosmtpd's constructor would set it up (without running it)."""
        smtp = cls.__new__(cls)
        smtp.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            smtp,
            asyncio.StreamReader(limit=cls.line_length_limit, loop=loop),
            client_connected_cb=smtp._cb_client_connected,
            loop=loop,
        )
        smtp.__ident__ = self.ident
        smtp.event_handler = self.event_handler
        smtp.hostname = self.hostname
        smtp.data_size_limit = self.data_size_limit
        smtp.enable_SMTPUTF8 = self.enable_smtputf8
        smtp._decode_data = self.decode_data
        smtp.tls_context = None
        smtp.require_starttls = self.require_starttls
        smtp._timeout_duration = self.timeout_duration
        smtp._timeout_handle = None
        smtp._tls_handshake_okay = True
        smtp._tls_protocol = None
        smtp._original_transport = None
        smtp.session = None
        smtp.envelope = None
        smtp.transport = None
        smtp._handler_coroutine = None
        smtp._auth_require_tls = self.auth_require_tls
        smtp._proxy_timeout = self.proxy_timeout
        smtp._authenticator = self.authenticator
        smtp._auth_callback = self.auth_callback
        smtp._auth_required = self.auth_required
        smtp._auth_methods = {
            name: _AuthMechAttr(getattr(smtp, method) if builtin else method, builtin)
            for name, method, builtin in self.auth_mechanisms
        }
        smtp._handle_hooks = dict(self.handle_hooks)
        smtp._ehlo_hook_ver = self.ehlo_hook_ver
        smtp._smtp_methods = BoundCommands(smtp, self.smtp_commands)  # type: ignore[assignment]  # read as a Mapping
        smtp._enforce_call_limit = False
        return smtp
