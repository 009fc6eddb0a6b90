"""DKIM private key files as operators make them: keys from the real `openssl` command (PEM Ed25519 in PKCS#8,
RSA in PKCS#1 and PKCS#8), dkimpy's base64 Ed25519 seed, and the files kubemta cannot use (encrypted, garbage,
EC P-256), each refused with an error naming the file and the accepted formats while the other keys stay usable."""

import base64
import logging
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.keys import ACCEPTED_FORMATS, Algorithm, KeyFileError, KeyStore, parse_key
from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.dkim.records import public_key

OPENSSL_RSA = {
    "genrsa-pkcs1": ["genrsa", "-traditional", "2048"],
    "genrsa-pkcs8": ["genrsa", "2048"],  # OpenSSL 3 writes PKCS#8 unless told -traditional
    "genpkey-pkcs8": ["genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:2048"],
}


def openssl(*args: str, stdin: bytes = b"") -> bytes:
    """The stdout of the real `openssl` command."""
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True, timeout=60).stdout


def openssl_public_der(pem: bytes) -> bytes:
    """OpenSSL's own DER SubjectPublicKeyInfo of a private key: the independent reference for the public key."""
    return openssl("pkey", "-pubout", "-outform", "DER", stdin=pem)


@pytest.fixture(scope="module")
def ed25519_pem() -> bytes:
    return openssl("genpkey", "-algorithm", "ed25519")


@pytest.fixture(scope="module", params=sorted(OPENSSL_RSA))
def rsa_pem(request: pytest.FixtureRequest) -> bytes:
    return openssl(*OPENSSL_RSA[request.param])


def test_openssl_ed25519_pem_is_an_ed25519_key_with_the_same_seed(ed25519_pem: bytes) -> None:
    assert ed25519_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    algorithm, key = parse_key(ed25519_pem)
    assert algorithm is Algorithm.ED25519_SHA256
    seed = base64.b64decode(key, validate=True)
    assert len(seed) == 32
    # the public key of that seed is OpenSSL's public key of the PEM (the last 32 octets of its SPKI, RFC 8410 §4)
    derived = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
    raw = derived.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == openssl_public_der(ed25519_pem)[-32:]
    assert public_key(ed25519_pem) == (Algorithm.ED25519_SHA256, base64.b64encode(raw).decode("ascii"))


def test_openssl_rsa_pem_is_an_rsa_key_in_pkcs1(rsa_pem: bytes) -> None:
    algorithm, key = parse_key(rsa_pem)
    assert algorithm is Algorithm.RSA_SHA256
    assert key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # dkimpy's own parser reads PKCS#1 only
    assert base64.b64decode(public_key(rsa_pem)[1]) == openssl_public_der(rsa_pem)


def test_crlf_and_surrounding_blank_lines_are_fine(ed25519_pem: bytes) -> None:
    mangled = b"\r\n" + ed25519_pem.replace(b"\n", b"\r\n") + b"\r\n\r\n"
    assert parse_key(mangled) == parse_key(ed25519_pem)


def test_dkimpys_base64_seed_is_still_read_as_is() -> None:
    seed = base64.b64encode(bytes(range(32)))
    assert parse_key(seed + b"\n") == (Algorithm.ED25519_SHA256, seed)


def key_file_error(data: bytes) -> str:
    with pytest.raises(KeyFileError) as raised:
        parse_key(data)
    text = str(raised.value)
    assert text.endswith(f"accepted: {ACCEPTED_FORMATS}")
    return text


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:secret"], "an encrypted PEM key"),
        (["genrsa", "-traditional", "-aes128", "-passout", "pass:secret", "1024"], "an encrypted PEM key"),
        (["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], "a PEM EC (ECDSA) key"),
        (["genpkey", "-algorithm", "ed448"], "a PEM Ed448 key"),
    ],
    ids=["encrypted-pkcs8-ed25519", "encrypted-pkcs1-rsa", "ec-p256", "ed448"],
)
def test_unusable_openssl_keys_are_clear_errors(args: list[str], reason: str) -> None:
    assert key_file_error(openssl(*args)).startswith(reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a key\n", "neither a PEM key nor a base64 Ed25519 seed"),
        (b"", "an Ed25519 seed must be 32 octets, not 0"),
        (b"c2hvcnQ=\n", "an Ed25519 seed must be 32 octets, not 5"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable PEM private key"),
        (b"-----BEGIN RSA PRIVATE KEY-----\n!!!!\n-----END RSA PRIVATE KEY-----\n", "not a readable PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\n" + b"\xff\x00" * 40, "not a readable PEM private key"),
    ],
    ids=["text", "empty", "short-seed", "truncated-pem", "non-base64-pem", "binary"],
)
def test_garbage_is_a_clear_error(data: bytes, reason: str) -> None:
    assert key_file_error(data).startswith(reason)


def test_a_public_key_in_a_key_file_is_a_clear_error(ed25519_pem: bytes) -> None:
    public_pem = openssl("pkey", "-pubout", stdin=ed25519_pem)
    assert key_file_error(public_pem).startswith("not a readable PEM private key")


def test_the_store_signs_with_openssl_keys_and_names_each_unusable_file(
    tmp_path: Path, ed25519_pem: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    domain = tmp_path / "example.com"
    domain.mkdir()
    (domain / "ed.key").write_bytes(ed25519_pem)
    (domain / "rsa.key").write_bytes(openssl(*OPENSSL_RSA["genpkey-pkcs8"]))
    (domain / "locked.key").write_bytes(openssl("genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:x"))
    (domain / "p256.key").write_bytes(openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"))
    (domain / "junk.key").write_bytes(b"junk\n")
    with caplog.at_level(logging.ERROR):
        store = KeyStore(tmp_path)
    assert [(key.selector, key.algorithm) for key in store.signing_keys("example.com")] == [
        ("ed", Algorithm.ED25519_SHA256),
        ("rsa", Algorithm.RSA_SHA256),
    ]
    messages = sorted(record.getMessage() for record in caplog.records)
    assert len(messages) == 3
    for message, name in zip(messages, ["junk.key", "locked.key", "p256.key"], strict=True):
        assert message.startswith(f"skipping DKIM key {domain / name}: ")
        assert ACCEPTED_FORMATS in message


def test_the_domain_check_derives_the_public_key_of_a_pem_ed25519_key(
    tmp_path: Path, ed25519_pem: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    domain = tmp_path / "example.com"
    domain.mkdir()
    (domain / "ed.key").write_bytes(ed25519_pem)
    raw = openssl_public_der(ed25519_pem)[-32:]
    (domain / "ed.pub").write_text(f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}\n")
    with caplog.at_level(logging.ERROR):
        (key,) = PublicKeyStore(tmp_path).published_keys("example.com")
    assert (key.algorithm, key.public, key.source) == (
        Algorithm.ED25519_SHA256,
        base64.b64encode(raw).decode("ascii"),
        "example.com/ed.key",
    )
    assert not caplog.records  # the .key (PEM) and the .pub agree: no "not the public key of" error


def test_the_domain_check_names_an_unusable_key_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    domain = tmp_path / "example.com"
    domain.mkdir()
    (domain / "p256.key").write_bytes(openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"))
    with caplog.at_level(logging.ERROR):
        assert PublicKeyStore(tmp_path).published_keys("example.com") == []
    (record,) = caplog.records
    assert str(domain / "p256.key") in record.getMessage() and ACCEPTED_FORMATS in record.getMessage()


def test_an_rsa_key_from_cryptography_in_pkcs8_matches_pkcs1() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    formats = (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL)
    parsed = [
        parse_key(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())) for fmt in formats
    ]
    assert parsed[0] == parsed[1]
