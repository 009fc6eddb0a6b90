"""`kubemta-admin dkim generate`: create a DKIM key in the Secret layout and print its DNS record.

RSA keys are 2048-bit (RFC 8301 §3.2: at least 1024, 2048 recommended), in PKCS#1 PEM;
Ed25519 keys are dkimpy's format, the base64 32-octet seed (RFC 8463). Keys are made
with `cryptography` (the runtime image has no `openssl` command). The private key is
written to `<keys-dir>/<domain>/<selector>.key` with mode 0600, for the queue-manager
that signs; its public key to `<keys-dir>/<domain>/<selector>.pub` with mode 0644, as the
TXT record value on one line (`v=DKIM1; k=...; p=...`), for the ingress' domain check,
which needs no private key. Neither file is ever overwritten. The TXT record
(RFC 6376 §3.6.1) goes to stdout as a zone-file line, its value split into
character-strings of at most 255 octets (RFC 1035 §3.3.14).
"""

import argparse
import base64
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.keys import KEY_SUFFIX
from kubemta_mail_auth.dkim.public_keys import PUBLIC_SUFFIX
from kubemta_mail_auth.dkim.records import TXT_STRING_LIMIT, public_key, record_value, zone_line

RSA_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
KEYS_DIR_VARIABLE = "KUBEMTA_DKIM_KEYS_DIR"
__all__ = ["TXT_STRING_LIMIT", "CliError", "generate", "main"]


class CliError(Exception):
    """A problem reported to the user with exit status 1."""


def generate_rsa() -> bytes:
    """A new RSA-2048 private key in PKCS#1 PEM."""
    key = rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def generate_ed25519() -> bytes:
    """A new Ed25519 private key in dkimpy's format: the base64 32-octet seed (RFC 8463 §3)."""
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed) + b"\n"


def write_private_key(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (its directory 0700 if new); an existing key is never replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; remove it first to replace the key") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def write_public_key(path: Path, value: str) -> None:
    """Create `path` with mode 0644 holding the record value on one line; an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise CliError(f"{path} exists; remove it first to replace the key") from None
    os.fchmod(fd, 0o644)  # readable by all whatever the umask: it is public
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(value + "\n")


def _name(value: str, what: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name or not all(LABEL.match(label) for label in name.split(".")):
        raise CliError(f"invalid {what}: {value!r}")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubemta-admin dkim", description="Manage DKIM signing keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate",
        help="create a private key (<selector>.key) and its public key (<selector>.pub) in the keys directory "
        "and print the DNS TXT record to publish",
    )
    generate.add_argument("--domain", required=True, help="signing domain (d=), e.g. example.com")
    generate.add_argument("--selector", required=True, help="selector (s=), e.g. 2026a")
    generate.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa", help="key type (default: rsa)")
    generate.add_argument("--keys-dir", type=Path, default=None, help=f"keys directory (default: ${KEYS_DIR_VARIABLE})")
    return parser


def generate(domain: str, selector: str, algorithm: str, keys_dir: Path) -> str:
    """Write a new key to `<keys_dir>/<domain>/<selector>.key` and `.pub`; the TXT record to publish (zone line)."""
    domain = _name(domain, "domain")
    selector = _name(selector, "selector")
    public_file = keys_dir / domain / f"{selector}{PUBLIC_SUFFIX}"
    if public_file.exists():  # checked first: never leave a new .key beside an old .pub
        raise CliError(f"{public_file} exists; remove it first to replace the key")
    private = generate_rsa() if algorithm == "rsa" else generate_ed25519()
    write_private_key(keys_dir / domain / f"{selector}{KEY_SUFFIX}", private)
    value = record_value(*public_key(private))
    write_public_key(public_file, value)
    return zone_line(domain, selector, value)


def main(argv: Sequence[str]) -> int:
    """`argv` starts with "dkim"; the exit status."""
    args = build_parser().parse_args(list(argv[1:]))
    keys_dir = args.keys_dir or (Path(os.environ[KEYS_DIR_VARIABLE]) if os.environ.get(KEYS_DIR_VARIABLE) else None)
    try:
        if keys_dir is None:
            raise CliError(f"no keys directory: pass --keys-dir or set {KEYS_DIR_VARIABLE}")
        record = generate(args.domain, args.selector, args.algorithm, keys_dir)
    except CliError as exc:
        print(f"kubemta-admin dkim: {exc}", file=sys.stderr)  # noqa: T201 - command-line answer
        return 1
    print(record)  # noqa: T201 - command-line answer
    return 0
