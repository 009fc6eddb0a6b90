"""DKIM signing with keys made by the real `openssl` command, as most operators have them: a PKCS#8 PEM Ed25519 key
(`openssl genpkey -algorithm ed25519`) makes an ed25519-sha256 signature, PKCS#8 and PKCS#1 RSA keys an rsa-sha256
one, and dkimpy and OpenDKIM verify them against the records published for them."""

import base64
import subprocess
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import pytest

from kubemta_mail_auth.dkim.keys import KeyStore
from kubemta_queue_manager.dkim_signer import DkimSigner, Outcome

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Keys from openssl\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <pem-1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)
OPENSSL = {
    "ed25519": ["genpkey", "-algorithm", "ed25519"],
    "rsa-pkcs8": ["genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048"],
    "rsa-pkcs1": ["genrsa", "-traditional", "2048"],
}


def openssl_key(zone, selector: str, kind: str) -> None:
    """Write a key made by `openssl` as `example.com/<selector>.key` and publish its record, as an operator would."""
    pem = subprocess.run(["openssl", *OPENSSL[kind]], capture_output=True, check=True, timeout=60).stdout
    path = zone.keys_dir / "example.com" / f"{selector}.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    der = subprocess.run(
        ["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem, capture_output=True, check=True, timeout=60
    ).stdout
    # the p= value from OpenSSL's own public key: Ed25519's raw 32 octets (RFC 8463 §4.2), RSA's SPKI (RFC 6376 §3.6.1)
    key_type, public = ("ed25519", der[-32:]) if kind == "ed25519" else ("rsa", der)
    record = f"v=DKIM1; k={key_type}; p={base64.b64encode(public).decode('ascii')}"
    zone.records[f"{selector}._domainkey.example.com"] = [record]


def tags_of(message: bytes) -> list[dict[bytes, bytes]]:
    parsed = dkim.DKIM(message)
    return [dkim.util.parse_tag_value(value) for name, value in parsed.headers if name.lower() == b"dkim-signature"]


def test_a_pem_ed25519_key_makes_an_ed25519_signature_dkimpy_verifies(dkim_zone, tmp_path: Path) -> None:
    openssl_key(dkim_zone, "ed", "ed25519")
    result = DkimSigner(KeyStore(dkim_zone.keys_dir)).sign(MESSAGE)
    assert result.outcome is Outcome.SIGNED
    (tags,) = tags_of(result.content)
    assert (tags[b"a"], tags[b"s"], tags[b"d"]) == (b"ed25519-sha256", b"ed", b"example.com")
    assert dkim.verify(result.content, dnsfunc=dkim_zone.dnsfunc)
    assert dkim_zone.opendkim_testmsg(result.content, tmp_path) == (0, "")


@pytest.mark.parametrize("rsa_kind", ["rsa-pkcs8", "rsa-pkcs1"])
def test_pem_rsa_and_ed25519_keys_both_sign_and_both_verify(dkim_zone, rsa_kind: str) -> None:
    openssl_key(dkim_zone, "ed", "ed25519")
    openssl_key(dkim_zone, "rsa", rsa_kind)
    signed = DkimSigner(KeyStore(dkim_zone.keys_dir)).sign(MESSAGE).content
    assert [tags[b"a"] for tags in tags_of(signed)] == [b"rsa-sha256", b"ed25519-sha256"]
    for index in range(2):
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=dkim_zone.dnsfunc)
