"""PublicKeyStore: public keys from `.pub` files (the ingress' directory) or derived from `.key` files (the
queue-manager's), the `.key` winning when both disagree, unusable files skipped, reloads on a Secret update."""

import base64
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.keys import Algorithm
from kubemta_mail_auth.dkim.public_keys import PublicKey, PublicKeyStore, parse_public_key
from kubemta_mail_auth.dkim.records import public_key, record_value


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # small: fast; the store is size-blind
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def ed25519_seed() -> bytes:
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed) + b"\n"


def put(directory: Path, name: str, data: bytes | str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def value_of(private: bytes) -> str:
    """The `.pub` file content of a private key: its record value on one line."""
    return record_value(*public_key(private)) + "\n"


def keys(store: PublicKeyStore, domain: str) -> list[tuple[str, Algorithm, str, str]]:
    return [(key.selector, key.algorithm, key.public, key.source) for key in store.keys_for(domain)]


def test_pub_files_alone_give_the_same_keys_as_the_private_keys(tmp_path: Path) -> None:
    private, public = tmp_path / "private", tmp_path / "public"
    for selector, data in (("r1", rsa_pem()), ("e1", ed25519_seed())):
        put(private, f"example.com/{selector}.key", data)
        put(public, f"example.com/{selector}.pub", value_of(data))
    from_private, from_public = PublicKeyStore(private), PublicKeyStore(public)
    same = [key[:3] for key in keys(from_private, "example.com")]
    assert [key[:3] for key in keys(from_public, "example.com")] == same
    assert [key.algorithm for key in from_public.keys_for("example.com")] == [
        Algorithm.ED25519_SHA256,
        Algorithm.RSA_SHA256,
    ]
    assert [key.source for key in from_public.keys_for("example.com")] == ["example.com/e1.pub", "example.com/r1.pub"]
    assert [key.source for key in from_private.keys_for("example.com")] == ["example.com/e1.key", "example.com/r1.key"]


def test_a_pub_that_matches_its_key_is_used_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed = ed25519_seed()
    put(tmp_path, "example.com/e1.key", seed)
    put(tmp_path, "example.com/e1.pub", value_of(seed))
    with caplog.at_level(logging.ERROR):
        (key,) = PublicKeyStore(tmp_path).keys_for("example.com")
    assert key == PublicKey("example.com", "e1", Algorithm.ED25519_SHA256, public_key(seed)[1], "example.com/e1.key")
    assert not caplog.records


def test_an_rsa_pub_in_pkcs1_is_the_same_key_as_its_private_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pem = rsa_pem()
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    pkcs1 = loaded.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    put(tmp_path, "example.com/r1.key", pem)
    put(tmp_path, "example.com/r1.pub", f"v=DKIM1; k=rsa; p={base64.b64encode(pkcs1).decode()}\n")
    with caplog.at_level(logging.ERROR):
        PublicKeyStore(tmp_path)
    assert not caplog.records


@pytest.mark.parametrize("other", ["rsa", "ed25519"])
def test_a_pub_that_disagrees_with_its_key_is_logged_and_the_key_wins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, other: str
) -> None:
    seed = ed25519_seed()
    put(tmp_path, "example.com/e1.key", seed)
    put(tmp_path, "example.com/e1.pub", value_of(rsa_pem() if other == "rsa" else ed25519_seed()))
    with caplog.at_level(logging.ERROR):
        store = PublicKeyStore(tmp_path)
    assert keys(store, "example.com") == [("e1", Algorithm.ED25519_SHA256, public_key(seed)[1], "example.com/e1.key")]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "e1.pub is not the public key of" in record.getMessage() and "e1.key" in record.getMessage()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not a record\n", "not a DKIM key record value"),
        ("v=DKIM1; k=rsa\n", "no p= tag"),
        ("v=DKIM1; k=rsa; p=\n", "p= is empty"),
        ("v=DKIM1; k=dsa; p=AAAA\n", "k=dsa is not a key type"),
        ("v=DKIM1; k=ed25519; p=AAAA\n", "must be 32 octets, not 3"),
        ("v=DKIM1; k=rsa; p=AAAA\n", "not a DER RSA public key"),
        (b"v=DKIM1; k=rsa; p=\xff\n", "not a DKIM key record value"),
    ],
)
def test_an_unusable_pub_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | bytes, reason: str
) -> None:
    put(tmp_path, "example.com/bad.pub", content)
    seed = ed25519_seed()
    put(tmp_path, "example.com/backed.pub", content)
    put(tmp_path, "example.com/backed.key", seed)  # the private key still gives the public key
    with caplog.at_level(logging.ERROR):
        store = PublicKeyStore(tmp_path)
    assert keys(store, "example.com") == [
        ("backed", Algorithm.ED25519_SHA256, public_key(seed)[1], "example.com/backed.key")
    ]
    messages = sorted(record.getMessage() for record in caplog.records)
    assert len(messages) == 2 and all(text.startswith("skipping DKIM key") and reason in text for text in messages)
    with pytest.raises(ValueError, match=reason):
        parse_public_key(content.encode() if isinstance(content, str) else content)


def test_other_files_and_hidden_entries_are_ignored(tmp_path: Path) -> None:
    put(tmp_path, "example.com/README", "not a key\n")
    put(tmp_path, "example.com/.e1.pub", value_of(ed25519_seed()))
    put(tmp_path, ".hidden/e1.pub", value_of(ed25519_seed()))
    put(tmp_path, "stray.pub", value_of(ed25519_seed()))
    assert PublicKeyStore(tmp_path).keys_for("example.com") == []
    assert PublicKeyStore(tmp_path / "absent").published_keys("example.com") == []


def test_published_keys_are_those_of_the_closest_parent_with_keys(tmp_path: Path) -> None:
    put(tmp_path, "Example.COM/e1.pub", value_of(ed25519_seed()))
    put(tmp_path, "news.example.com/e2.pub", value_of(ed25519_seed()))
    store = PublicKeyStore(tmp_path)
    assert [key.selector for key in store.published_keys("a.b.example.com.")] == ["e1"]
    assert [(key.domain, key.selector) for key in store.published_keys("NEWS.example.com")] == [
        ("news.example.com", "e2")
    ]
    assert store.published_keys("example.org") == []
    assert store.keys_for("b.example.com") == []


def test_keys_are_reloaded_when_the_secret_swaps_its_data_symlink(tmp_path: Path) -> None:
    """A mounted Secret: `example.com -> ..data/example.com`, `..data -> ..<timestamp>`, swapped on update."""
    first, second = ed25519_seed(), ed25519_seed()
    put(tmp_path, "..2026_01/example.com/e1.pub", value_of(first))
    put(tmp_path, "..2026_02/example.com/e1.pub", value_of(second))
    put(tmp_path, "..2026_02/example.com/e2.pub", value_of(second))
    os.symlink("..2026_01", tmp_path / "..data")
    os.symlink("..data/example.com", tmp_path / "example.com")
    now = [0.0]
    store = PublicKeyStore(tmp_path, check_interval=5.0, clock=lambda: now[0])
    assert [(key.selector, key.public) for key in store.keys_for("example.com")] == [("e1", public_key(first)[1])]
    os.symlink("..2026_02", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")  # Kubernetes' atomic swap
    now[0] = 4.0
    assert [key.public for key in store.keys_for("example.com")] == [public_key(first)[1]]  # not checked yet
    now[0] = 9.5
    assert [(key.selector, key.public) for key in store.keys_for("example.com")] == [
        ("e1", public_key(second)[1]),
        ("e2", public_key(second)[1]),
    ]


def test_keys_are_reloaded_when_a_pub_file_is_rewritten(tmp_path: Path) -> None:
    first, second = ed25519_seed(), ed25519_seed()
    path = put(tmp_path, "example.com/e1.pub", value_of(first))
    now = [0.0]
    store = PublicKeyStore(tmp_path, check_interval=5.0, clock=lambda: now[0])
    path.write_text(value_of(second))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))  # same size: a new mtime
    now[0] = 6.0
    assert [key.public for key in store.published_keys("example.com")] == [public_key(second)[1]]
