"""`python -m bench.dkim_signing`: CPU time of one DKIM signature, as the queue-manager signs each message.

Prints milliseconds per signature of a 10 KiB message for rsa-sha256 (2048-bit) with
dkimpy's own RSA arithmetic and with the OpenSSL primitive kubemta installs
(kubemta_queue_manager.dkim_rsa), and for ed25519-sha256. Keys are made fresh by the
real `dkim generate` code in a temporary directory.
"""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import dkim.crypto  # type: ignore[import-untyped]

from kubemta_queue_manager import dkim_cli, dkim_rsa

MESSAGE = (
    b"From: Alice <alice@bench.test>\r\nTo: bob@example.org\r\nSubject: benchmark\r\n"
    b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <b1@bench.test>\r\n\r\n" + (b"x" * 70 + b"\r\n") * 140
)
ROUNDS = 100
CANONICALIZATION = (b"relaxed", b"relaxed")


def per_signature_ms(key: bytes, algorithm: bytes) -> float:
    started = time.process_time()
    for _ in range(ROUNDS):
        dkim.sign(
            MESSAGE, b"s1", b"bench.test", key, signature_algorithm=algorithm, canonicalize=(b"relaxed", b"relaxed")
        )
    return (time.process_time() - started) / ROUNDS * 1000


def with_primitives(install: Callable[[], None], key: bytes, algorithm: bytes) -> float:
    install()
    return per_signature_ms(key, algorithm)


def dkimpy_own() -> None:
    dkim.parse_pem_private_key = dkim.crypto.parse_pem_private_key
    dkim.RSASSA_PKCS1_v1_5_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        keys = Path(work)
        dkim_cli.generate("bench.test", "r1", "rsa", keys)
        dkim_cli.generate("bench.test", "e1", "ed25519", keys)
        rsa_key = (keys / "bench.test" / "r1.key").read_bytes()
        ed_key = (keys / "bench.test" / "e1.key").read_bytes().strip()
        rows = [
            ("rsa-sha256, dkimpy's RSA", with_primitives(dkimpy_own, rsa_key, b"rsa-sha256")),
            ("rsa-sha256, OpenSSL (kubemta)", with_primitives(dkim_rsa.install, rsa_key, b"rsa-sha256")),
            ("ed25519-sha256", per_signature_ms(ed_key, b"ed25519-sha256")),
        ]
    print(f"CPU ms per DKIM signature of a {len(MESSAGE)}-octet message ({ROUNDS} rounds):")  # noqa: T201
    for name, value in rows:
        print(f"  {name:32} {value:6.2f}")  # noqa: T201


if __name__ == "__main__":
    main()
