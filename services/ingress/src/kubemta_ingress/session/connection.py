"""`IngressSMTP`: one SMTP connection, aiosmtpd's `SMTP` with the ingress' layers.

The layers, each in its module: the life cycle, state and timers (core.py), TLS
(tls_start.py), the opening before the greeting (intake.py) and the command layer
(commands.py). The private parts of aiosmtpd they use are listed in
aiosmtpd_contract.py.

A listener's first connection is built by aiosmtpd's constructor; the later ones from
that connection's `Blueprint`, without aiosmtpd's per-connection reflection.
"""

import asyncio

from kubemta_ingress.interfaces import SmtpHandler
from kubemta_ingress.session.aiosmtpd_contract import Blueprint
from kubemta_ingress.session.commands import Commands
from kubemta_ingress.session.core import SessionCallback
from kubemta_ingress.session.intake import Intake
from kubemta_ingress.session.options import SessionOptions

IDENT = "ESMTP kubemta"


class IngressSMTP(Commands, Intake):
    """One SMTP connection."""

    def __init__(
        self,
        handler: SmtpHandler,
        *,
        hostname: str,
        data_size_limit: int,
        timeout: float,
        on_open: SessionCallback,
        on_close: SessionCallback,
        options: SessionOptions | None = None,
    ) -> None:
        options = options or SessionOptions()
        tls = options.tls
        super().__init__(
            handler,
            hostname=hostname,
            ident=IDENT,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=timeout,
            tls_context=tls.current if tls is not None and not options.policy.implicit_tls else None,
            require_starttls=options.policy.require_starttls,
            auth_required=options.policy.auth_required,
            auth_require_tls=True,
            authenticator=options.authenticator,
            loop=asyncio.get_running_loop(),
        )
        self._init_ingress(options, on_open, on_close)

    @classmethod
    def from_blueprint(
        cls,
        blueprint: Blueprint,
        *,
        options: SessionOptions,
        on_open: SessionCallback,
        on_close: SessionCallback,
    ) -> "IngressSMTP":
        """A new connection of a listener whose first connection gave `blueprint`."""
        connection = blueprint.build(cls, asyncio.get_running_loop())
        tls = options.tls
        if tls is not None and not options.policy.implicit_tls:
            connection.tls_context = tls.current  # the certificate current now
        connection._init_ingress(options, on_open, on_close)
        return connection
