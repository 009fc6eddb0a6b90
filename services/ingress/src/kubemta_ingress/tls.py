"""The server TLS context for STARTTLS and implicit TLS, rebuilt when the certificate files change.

cert-manager renews a certificate by rewriting the Kubernetes Secret; the kubelet
swaps the mounted files atomically (a `..data` symlink to a new directory), so the
paths stay the same while their content changes. `TlsContextStore` fingerprints the
content of both files every `KUBEMTA_TLS_RELOAD_INTERVAL`; on a change it builds a new
`SSLContext` and hands it to every *new* TLS handshake from then on. A session already
encrypted keeps its own context: reloading never drops a session. A new pair that does
not load (key does not match the certificate, half-written files) is logged and
counted, the old context stays in use, and the next check tries again.

Protocol versions: TLS 1.2 and later only (RFC 8996 deprecates TLS 1.0 and 1.1).
TLS 1.2 cipher suites are Mozilla's "intermediate" list: ECDHE/DHE key exchange with
AEAD ciphers only; TLS 1.3 suites are OpenSSL's defaults (all AEAD).
"""

import asyncio
import hashlib
import logging
import ssl
from pathlib import Path

from kubemta_common.metrics import preinitialise
from kubemta_ingress import metrics

logger = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # RFC 8996
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)

preinitialise(metrics.TLS_CERTIFICATE_RELOADS, result=["loaded", "failed"])
preinitialise(metrics.TLS_HANDSHAKES, result=["success", "failure"])


def build_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for `cert_file`/`key_file`; raises OSError or ssl.SSLError when they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_NONE  # SMTP clients rarely present certificates; none is asked for
    context.load_cert_chain(cert_file, key_file)
    return context


def fingerprint(*paths: Path) -> str:
    """A digest of the files' content (raises OSError when one cannot be read)."""
    digest = hashlib.sha256()
    for path in paths:
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class TlsContextStore:
    """The current server TLS context, reloaded from its files when their content changes."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        """Load the pair; raises OSError or ssl.SSLError at start-up when it does not load."""
        self._cert_file = cert_file
        self._key_file = key_file
        self._fingerprint = fingerprint(cert_file, key_file)
        self._current = build_server_context(cert_file, key_file)
        self._failed_fingerprint: str | None = None

    @property
    def current(self) -> ssl.SSLContext:
        """The context for the next handshake."""
        return self._current

    def reload_if_changed(self) -> bool:
        """Rebuild the context when the files changed; True when a new context is now current."""
        try:
            seen = fingerprint(self._cert_file, self._key_file)
        except OSError as exc:
            logger.warning("cannot read the TLS certificate files: %s", exc)
            return False
        if seen == self._fingerprint:
            return False
        try:
            context = build_server_context(self._cert_file, self._key_file)
        except (OSError, ssl.SSLError) as exc:
            if seen != self._failed_fingerprint:  # log a broken pair once, not every interval
                self._failed_fingerprint = seen
                metrics.TLS_CERTIFICATE_RELOADS.labels(result="failed").inc()
                logger.error(
                    "new TLS certificate or key does not load, keeping the previous one: %s",
                    exc,
                    extra={"cert_file": str(self._cert_file)},
                )
            return False
        self._current = context
        self._fingerprint = seen
        self._failed_fingerprint = None
        metrics.TLS_CERTIFICATE_RELOADS.labels(result="loaded").inc()
        logger.info("TLS certificate reloaded", extra={"cert_file": str(self._cert_file)})
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()
