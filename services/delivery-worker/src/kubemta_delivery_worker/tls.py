"""TLS contexts for outgoing SMTP (STARTTLS, RFC 3207).

- Opportunistic (Postfix `may` and `encrypt`): encrypt, but accept any certificate
  (self-signed, expired, wrong name), since an unauthenticated encrypted session is
  still better than plaintext (RFC 7435 §1.3).
- Verifying (Postfix `verify`, MTA-STS RFC 8461 §4.2): the certificate must chain to a
  trusted CA (KUBEMTA_TLS_CA_FILE, or the system's CAs) and name the host (RFC 6125).
"""

import ssl


def opportunistic_tls_context() -> ssl.SSLContext:
    """A client context that encrypts but does not verify the server's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verifying_tls_context(ca_file: str = "") -> ssl.SSLContext:
    """A client context that verifies the chain (to `ca_file`'s CAs, or the system's) and the host name."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8461 §4.2 / RFC 8996: no TLS 1.0/1.1
    return context
