"""What a transport is to the deliverer: a route kind, the dialect its hosts are spoken to in, and
whether its sessions are kept for reuse. Each transport is one module defining one (smtp.py,
lmtp.py), listed in the registry (registry.py)."""

from dataclasses import dataclass

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.connection import SmtpConnection
from kubemta_delivery_worker.dialect import Dialect
from kubemta_delivery_worker.mail_transaction import HostAttempt
from kubemta_delivery_worker.pool import ConnectionPool
from kubemta_delivery_worker.smtp_options import SmtpOptions
from kubemta_delivery_worker.transaction import attempt_host


@dataclass(frozen=True, slots=True)
class Transport:
    """One transport kind (Route.kind) on the one SMTP wire client."""

    kind: message_pb2.TransportKind.ValueType
    dialect: Dialect
    pooled: bool  # sessions go back to the idle connection cache (pool.py)

    def label(self, host: message_pb2.RouteHost) -> str:
        """How logs and diagnostics name `host`."""
        return self.dialect.label(host)

    async def attempt(
        self,
        host: message_pb2.RouteHost,
        job: message_pb2.DeliveryJob,
        recipients: list[str],
        options: SmtpOptions,
        pool: ConnectionPool[SmtpConnection] | None = None,
    ) -> HostAttempt:
        """Deliver `job` to `recipients` through `host`; never raises for protocol or network failures."""
        return await attempt_host(host, job, recipients, options, pool if self.pooled else None, self.dialect)
