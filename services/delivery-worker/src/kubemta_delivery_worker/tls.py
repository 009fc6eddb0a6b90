"""TLS for outgoing SMTP: opportunistic STARTTLS (RFC 3207) without certificate checks.

Like Postfix's `smtp_tls_security_level = may`: encrypt when the server offers it, but
accept any certificate (self-signed, expired, wrong name), since an unauthenticated
encrypted session is still better than plaintext (RFC 7435 §1.3).
"""

import ssl


def opportunistic_tls_context() -> ssl.SSLContext:
    """A client context that encrypts but does not verify the server's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
