"""RSA signatures for DKIM come from OpenSSL and are byte for byte what dkimpy's own arithmetic makes."""

import time
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import dkim.crypto  # type: ignore[import-untyped]
import pytest

from kubemta_queue_manager import dkim_rsa, dkim_signer

MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: report\r\n"
    b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\nMessage-ID: <r1@example.com>\r\n\r\n" + b"line of text\r\n" * 500
)


def rsa_key(dkim_zone, selector: str = "r1") -> bytes:
    dkim_zone.generate("example.com", selector, "rsa")
    return Path(dkim_zone.keys_dir / "example.com" / f"{selector}.key").read_bytes()


def sign(key: bytes, algorithm: bytes = b"rsa-sha256") -> bytes:
    signature: bytes = dkim.sign(
        MESSAGE, b"r1", b"example.com", key, signature_algorithm=algorithm, canonicalize=(b"relaxed", b"relaxed")
    )
    return signature


def test_the_signer_module_installs_the_openssl_primitives() -> None:
    assert vars(dkim_signer)["dkim_rsa"] is dkim_rsa  # imported (and installed) by the signer module
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_rsa.rsassa_pkcs1_v1_5_sign
    assert dkim.parse_pem_private_key is dkim_rsa.parse_pem_private_key


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"rsa-sha1"])
def test_openssl_signs_exactly_as_dkimpy_does(dkim_zone, monkeypatch: pytest.MonkeyPatch, algorithm: bytes) -> None:
    key = rsa_key(dkim_zone)
    monkeypatch.setattr(time, "time", lambda: 1_796_000_000.0)  # the same t= for both
    ours = sign(key, algorithm)
    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", dkim.crypto.RSASSA_PKCS1_v1_5_sign)
    monkeypatch.setattr(dkim, "parse_pem_private_key", dkim.crypto.parse_pem_private_key)
    theirs = sign(key, algorithm)
    assert ours == theirs
    assert dkim.verify(ours + MESSAGE, dnsfunc=dkim_zone.dnsfunc)


def test_a_key_that_is_not_rsa_is_refused_as_dkimpy_refuses_it() -> None:
    with pytest.raises(dkim.KeyFormatError):
        sign(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
