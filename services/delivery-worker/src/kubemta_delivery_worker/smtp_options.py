"""How the delivery worker speaks SMTP to one host (`SmtpOptions`): its EHLO name, TLS contexts, timeouts, relay
credentials, pipelining, and the delivery attempt's deadline the timeouts are cut to (connection.py uses them)."""

import ssl
from dataclasses import dataclass

from kubemta_delivery_worker.attempt_limits import AttemptDeadline
from kubemta_delivery_worker.relay_auth import RelayCredentials


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    """How the worker speaks SMTP: its EHLO name, TLS context, timeouts (seconds) and pipelining."""

    ehlo_name: str
    tls_context: ssl.SSLContext
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    # TLS policy verify / MTA-STS (None: the system's CAs), and relayhost AUTH (None: no AUTH).
    verify_tls_context: ssl.SSLContext | None = None
    relay_credentials: RelayCredentials | None = None
    # RFC 2920: MAIL, RCPT and DATA in one write when the server offers PIPELINING (wire.py).
    pipelining: bool = True
    # The deadline of the delivery attempt these options are for (set per job by the deliverer).
    deadline: AttemptDeadline | None = None

    def for_attempt(self, deadline: AttemptDeadline) -> "SmtpOptions":
        """These options for one delivery attempt bounded by `deadline` (a plain constructor call: dataclasses.replace
        costs several times as much, once per job)."""
        return SmtpOptions(
            ehlo_name=self.ehlo_name,
            tls_context=self.tls_context,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            data_timeout=self.data_timeout,
            verify_tls_context=self.verify_tls_context,
            relay_credentials=self.relay_credentials,
            pipelining=self.pipelining,
            deadline=deadline,
        )

    def clamp(self, seconds: float) -> float:
        """A timeout of `seconds`, cut to the time left before the attempt's deadline."""
        return self.deadline.clamp(seconds) if self.deadline is not None else seconds

    def expired(self) -> bool:
        """True once the attempt's deadline has passed."""
        return self.deadline is not None and self.deadline.passed
