"""What the sessions of one listener share: its policy and the process-wide TLS, AUTH, PROXY and limits."""

from dataclasses import dataclass, field

from aiosmtpd.smtp import AuthenticatorType

from kubemta_ingress import limits
from kubemta_ingress.data_budget import DataBudget
from kubemta_ingress.listeners import MX, ListenerPolicy
from kubemta_ingress.proxy import ProxyTrust
from kubemta_ingress.tls import TlsContextStore


@dataclass(frozen=True)
class SessionOptions:
    """What a listener's sessions share: its policy and the process-wide TLS, AUTH, PROXY and limits."""

    policy: ListenerPolicy = MX
    tls: TlsContextStore | None = None
    authenticator: AuthenticatorType | None = None
    proxy: ProxyTrust = field(default_factory=ProxyTrust)
    session_limits: limits.SessionLimits = field(default_factory=limits.SessionLimits)
    connections: limits.ConnectionLimiter = field(default_factory=limits.unlimited)
    data_budget: DataBudget | None = None
