"""One SMTP session of the ingress: aiosmtpd's protocol with the ingress' state, limits, TLS and commands.

connection.py assembles `IngressSMTP` from its layers: core.py (life cycle, state.py's
explicit session state, timers.py), tls_start.py, intake.py (PROXY header, limits,
implicit TLS) and commands.py. aiosmtpd_contract.py lists the aiosmtpd internals they use.
"""

from kubemta_ingress.session.connection import IDENT, IngressSMTP
from kubemta_ingress.session.options import SessionOptions

__all__ = ["IDENT", "IngressSMTP", "SessionOptions"]
