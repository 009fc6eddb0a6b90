"""Zones for the domain check's tests against a real name server: one correct sending domain and broken
variants, each broken in exactly one way, plus the reverse zone of the sending IPs.

All names are under `dc.test`; the sending IPs and the name server share this run's random `127.a.b`
prefix, so the reverse zone is `b.a.127.in-addr.arpa`. DKIM keys are written to `keys_dir` in the
`<domain>/<selector>.key` + `.pub` layout and their records made with `kubemta_mail_auth.dkim.records`,
as `kubemta-admin dkim generate` does (RSA records exceed 255 octets: several TXT strings);
`public_keys_dir` holds only the `.pub` files, as the chart gives them to the ingress.
"""

import base64
import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kubemta_mail_auth.dkim.records import public_key, record_value, zone_line
from tests.harness.dns_server import zone_text

ZONE = "dc.test"
HOSTNAME = f"mta.{ZONE}"
NO_ADDRESS_HOSTNAME = f"noaddr.{ZONE}"
GOOD = f"good.{ZONE}"
NO_DKIM = f"nodkim.{ZONE}"
WRONG_DKIM = f"wrongkey.{ZONE}"
SPF_WITHOUT_IP = f"spfnoip.{ZONE}"
SPF_TOO_MANY_LOOKUPS = f"spflimit.{ZONE}"
NO_DMARC = f"nodmarc.{ZONE}"
NULL_MX = f"nullmx.{ZONE}"
SERVFAIL_ZONE = "broken.test"
SELECTOR = "s1"
RSA_SELECTOR = "r1"


def write_key(keys_dir: Path, domain: str, selector: str, algorithm: str) -> str:
    """A new private key at `<keys_dir>/<domain>/<selector>.key`, its public key beside it (`.pub`); the value."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        data = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    else:
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        data = base64.b64encode(seed) + b"\n"
    path = keys_dir / domain / f"{selector}.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)
    value = record_value(*public_key(data))
    path.with_suffix(".pub").write_text(value + "\n")
    return value


def public_only(keys_dir: Path, public_dir: Path) -> Path:
    """`public_dir` with a copy of the `.pub` files of `keys_dir` and none of its private keys."""
    for public_file in keys_dir.glob("*/*.pub"):
        target = public_dir / public_file.parent.name / public_file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public_file, target)
    return public_dir


@dataclass(frozen=True)
class DomainZones:
    """The zones (origin -> zone file text), the keys directory and the addresses they describe."""

    zones: dict[str, str]
    keys_dir: Path
    """The private and public keys (`.key` and `.pub`), as the queue-manager may have them."""
    public_keys_dir: Path
    """Only the public keys (`.pub`), as the ingress has them."""
    sending_ip: ipaddress.IPv4Address
    """Has A (HOSTNAME) and a PTR naming HOSTNAME."""
    no_ptr_ip: ipaddress.IPv4Address
    """Listed in HOSTNAME's A records and every SPF record, but without a PTR record."""


def build_zones(keys_dir: Path, net: str) -> DomainZones:
    """The `dc.test` zone and the reverse zone of `net` (`127.a.b`), with keys written to `keys_dir`.

    The public keys alone are copied to the sibling directory `<keys_dir>-public`.
    """
    sending_ip = ipaddress.IPv4Address(f"{net}.10")
    no_ptr_ip = ipaddress.IPv4Address(f"{net}.11")
    spf = f"v=spf1 ip4:{net}.0/24 -all"
    records = [
        f"mta A {sending_ip}",
        f"mta A {no_ptr_ip}",
        "mx A 192.0.2.25",
        f"sub.{GOOD}. A 192.0.2.26",  # a subdomain without its own _dmarc: inherits good's policy
    ]
    for domain in (GOOD, NO_DKIM, WRONG_DKIM, SPF_WITHOUT_IP, SPF_TOO_MANY_LOOKUPS, NO_DMARC, NULL_MX):
        value = write_key(keys_dir, domain, SELECTOR, "ed25519")
        if domain == WRONG_DKIM:
            other_dir = keys_dir.with_name(f"{keys_dir.name}-unpublished")
            value = write_key(other_dir, domain, SELECTOR, "ed25519")  # publish another key than the one in use
        if domain != NO_DKIM:
            records.append(zone_line(domain, SELECTOR, value))
        if domain == SPF_WITHOUT_IP:
            records.append(f'{domain}. TXT "v=spf1 ip4:192.0.2.0/24 ~all"')
        elif domain == SPF_TOO_MANY_LOOKUPS:
            records.append(f'{domain}. TXT "v=spf1 include:l1.{ZONE} -all"')
        else:
            records.append(f'{domain}. TXT "{spf}"')
        records.append(f'{domain}. TXT "some-site-verification=abc"')
        if domain != NO_DMARC:
            records.append(f'_dmarc.{domain}. TXT "v=DMARC1; p=reject; rua=mailto:postmaster@{domain}"')
        records.append(f"{domain}. MX 0 ." if domain == NULL_MX else f"{domain}. MX 10 mx.{ZONE}.")
    records.append(zone_line(GOOD, RSA_SELECTOR, write_key(keys_dir, GOOD, RSA_SELECTOR, "rsa")))
    for index in range(1, 12):  # l1 includes l2 ... l11: 11 includes, the last would authorize the IP
        final = f"ip4:{net}.0/24" if index == 11 else f"include:l{index + 1}.{ZONE}"
        records.append(f'l{index} TXT "v=spf1 {final} -all"')
    _, a, b = net.split(".")
    reverse = f"{b}.{a}.127.in-addr.arpa"
    return DomainZones(
        zones={ZONE: zone_text(ZONE, records), reverse: zone_text(reverse, [f"10 PTR {HOSTNAME}."])},
        keys_dir=keys_dir,
        public_keys_dir=public_only(keys_dir, keys_dir.with_name(f"{keys_dir.name}-public")),
        sending_ip=sending_ip,
        no_ptr_ip=no_ptr_ip,
    )
