"""The dkim:<selector> checks against a fake resolver: published, missing, another key, revoked, bad syntax,
several records, key type, a parent signing domain, no keys at all. Each runs with the keys directory in three
layouts: private keys only (`.key`, the queue-manager's), public keys only (`.pub`, the ingress'), and both."""

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.public_keys import PublicKeyStore
from kubemta_mail_auth.dkim.records import public_key, record_value, zone_line
from kubemta_mail_auth.domain_check.dkim_check import check_dkim, suggested_selector
from kubemta_mail_auth.domain_check.dns_queries import Outcome
from kubemta_mail_auth.domain_check.model import Status
from tests.harness.fake_dns import FakeDns


def write_rsa(keys_dir: Path, domain: str, selector: str) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # small: fast; the check is size-blind
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    (keys_dir / domain).mkdir(parents=True, exist_ok=True)
    (keys_dir / domain / f"{selector}.key").write_bytes(pem)
    return key


def write_ed25519(keys_dir: Path, domain: str, selector: str) -> bytes:
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    data = base64.b64encode(seed) + b"\n"
    (keys_dir / domain).mkdir(parents=True, exist_ok=True)
    (keys_dir / domain / f"{selector}.key").write_bytes(data)
    return data


def published(keys_dir: Path, domain: str, selector: str) -> str:
    """The record value of a key: its `.pub` file, or derived from its `.key`."""
    public_file = keys_dir / domain / f"{selector}.pub"
    if public_file.exists():
        return public_file.read_text().strip()
    algorithm, public = public_key((keys_dir / domain / f"{selector}.key").read_bytes())
    return record_value(algorithm, public)


@pytest.fixture(params=["key", "pub", "both"])
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(layout: str):
    """`store(keys_dir)`: the directory's `.key` files turned into `layout`, as a PublicKeyStore."""

    def make(keys_dir: Path) -> PublicKeyStore:
        for key_file in keys_dir.glob("*/*.key"):
            if layout != "key":
                key_file.with_suffix(".pub").write_text(record_value(*public_key(key_file.read_bytes())) + "\n")
            if layout == "pub":
                key_file.unlink()
        return PublicKeyStore(keys_dir)

    return make


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    write_rsa(tmp_path, "example.com", "r1")
    write_ed25519(tmp_path, "example.com", "e1")
    return tmp_path


async def test_every_key_published_is_ok(keys_dir, store, layout):
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "r1"))
    dns.add("e1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "e1"))
    checks = await check_dkim("example.com", store(keys_dir), dns)
    assert [(c.name, c.status) for c in checks] == [("dkim:e1", Status.OK), ("dkim:r1", Status.OK)]
    assert checks[0].expected == zone_line("example.com", "e1", published(keys_dir, "example.com", "e1"))
    assert "ed25519" in checks[0].detail and "rsa" in checks[1].detail
    source = "example.com/e1.pub" if layout == "pub" else "example.com/e1.key"  # the key that signs wins
    assert f"({source})" in checks[0].detail


async def test_missing_record_names_the_record_to_publish(keys_dir, store):
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "r1"))
    checks = {c.name: c for c in await check_dkim("example.com", store(keys_dir), dns)}
    missing = checks["dkim:e1"]
    assert missing.status is Status.MISSING and missing.found == []
    assert missing.expected is not None and missing.expected.startswith("e1._domainkey.example.com. IN TXT (")
    assert "k=ed25519" in missing.expected and "no DKIM key record at e1._domainkey.example.com" in missing.detail


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ("v=DKIM1; k=rsa; p=", "revoked (empty p=)"),
        ("v=DKIM1; k=rsa; p=!!!", "not a valid DKIM key record: p= is not base64"),
        ("v=DKIM2; p=AAAA", "not a valid DKIM key record: v=DKIM2"),
        ("v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "publishes a k=ed25519 key"),
    ],
)
async def test_broken_records_are_wrong(keys_dir, record, detail, store):
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", record)
    checks = {c.name: c for c in await check_dkim("example.com", store(keys_dir), dns)}
    assert checks["dkim:r1"].status is Status.WRONG and detail in checks["dkim:r1"].detail
    assert checks["dkim:r1"].found == [record]


async def test_another_key_and_several_records_are_wrong(keys_dir, tmp_path_factory, store):
    other_dir = tmp_path_factory.mktemp("other")
    write_rsa(other_dir, "example.com", "r1")
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", published(other_dir, "example.com", "r1"))
    dns.add("e1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "e1"), "v=DKIM1; k=rsa; p=")
    checks = {c.name: c for c in await check_dkim("example.com", store(keys_dir), dns)}
    assert checks["dkim:r1"].status is Status.WRONG and "another rsa key" in checks["dkim:r1"].detail
    assert checks["dkim:e1"].status is Status.WRONG and "2 TXT records" in checks["dkim:e1"].detail


async def test_an_rsa_key_published_as_pkcs1_is_the_same_key(tmp_path, store):
    key = write_rsa(tmp_path, "example.com", "r1")
    pkcs1 = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", f"k=rsa; p={base64.b64encode(pkcs1).decode()}")
    (check,) = await check_dkim("example.com", store(tmp_path), dns)
    assert check.status is Status.OK


async def test_a_subdomain_is_checked_against_its_signing_parent(keys_dir, store):
    dns = FakeDns()
    dns.add("r1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "r1"))
    dns.add("e1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "e1"))
    checks = await check_dkim("news.example.com", store(keys_dir), dns)
    assert all(c.status is Status.OK for c in checks)
    assert "signed with d=example.com" in checks[0].detail
    assert ("e1._domainkey.news.example.com", "TXT") not in dns.queries


async def test_no_keys_tells_how_to_make_one(tmp_path, store):
    (check,) = await check_dkim("example.org", store(tmp_path), FakeDns())
    assert check.name == "dkim" and check.status is Status.MISSING
    assert f"kubemta-admin dkim generate --domain example.org --selector {suggested_selector()}" in check.detail
    (check,) = await check_dkim("example.org", None, FakeDns())
    assert check.status is Status.MISSING and "KUBEMTA_DKIM_KEYS_DIR is not set" in check.detail


async def test_a_dns_failure_is_unknown(keys_dir, store):
    dns = FakeDns()
    dns.fail("r1._domainkey.example.com", "TXT", Outcome.TIMEOUT)
    dns.add("e1._domainkey.example.com", "TXT", published(keys_dir, "example.com", "e1"))
    checks = {c.name: c for c in await check_dkim("example.com", store(keys_dir), dns)}
    assert checks["dkim:r1"].status is Status.UNKNOWN and checks["dkim:e1"].status is Status.OK
