"""DKIM for the end-to-end tests: keys made with the real CLI, and two independent verifiers that
read the public keys from a real name server.

- `generate_key` runs `kubemta-admin dkim generate` (the console script) and returns the
  zone-file line it printed, ready to be served by nsd (tests/harness/dns_server.py).
- `TxtLookup` is dkimpy's `dnsfunc` answered by one name server through dnspython (never the
  system resolver); it records every name it was asked for.
- `dkimpy_verdicts` checks every DKIM-Signature of a message separately with dkimpy.
- `opendkim_testmsg` runs OpenDKIM's `opendkim-testmsg` (Debian `opendkim-tools`) in a user +
  mount namespace whose /etc/resolv.conf names the test's name server (tests/harness/
  opendkim_driver.py). opendkim-testmsg exits 0 when at least one signature verifies (libopendkim's
  dkim_eom() reports the first good one), so `only_signature` keeps one signature to check each
  on its own.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dkim  # type: ignore[import-untyped]
import dns.rdatatype
import dns.resolver

BIN = Path(sys.executable).parent
OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"
DRIVER = Path(__file__).with_name("opendkim_driver.py")
RUN_TIMEOUT = 60.0


def generate_key(keys_dir: Path, domain: str, selector: str, algorithm: str) -> str:
    """`kubemta-admin dkim generate ...`: writes `<keys_dir>/<domain>/<selector>.key` and `.pub`; the printed
    zone line."""
    done = subprocess.run(
        [
            str(BIN / "kubemta-admin"), "dkim", "generate",
            "--domain", domain, "--selector", selector, "--algorithm", algorithm, "--keys-dir", str(keys_dir),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"dkim generate failed ({done.returncode}): {done.stderr}")
    line = done.stdout.strip()
    if not line.startswith(f"{selector}._domainkey.{domain}. IN TXT ("):
        raise RuntimeError(f"unexpected output of dkim generate: {line!r}")
    return line


class TxtLookup:
    """dkimpy's `dnsfunc`: the TXT record of a name as one name server at `address`:`port` answers it."""

    def __init__(self, address: str, port: int = 53, lifetime: float = 5.0) -> None:
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [address]
        self._resolver.port = port
        self._resolver.lifetime = lifetime
        self.queried: list[str] = []

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        """The record's character-strings joined (RFC 6376 §3.6.2.2), None when there is none.

        Timeouts and server failures propagate: a broken name server must not pass for a bad signature.
        """
        text = name.decode("ascii").rstrip(".").lower()
        self.queried.append(text)
        try:
            answer = self._resolver.resolve(text + ".", "TXT", raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return None
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(next(iter(rrset)).strings)
        return None


def signature_tags(message: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature header, topmost first."""
    parsed = dkim.DKIM(message)
    return [dkim.util.parse_tag_value(value) for name, value in parsed.headers if name.lower() == b"dkim-signature"]


def dkimpy_verdicts(message: bytes, lookup: TxtLookup) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature separately, topmost first.

    A signature that does not verify is False; dkimpy's exceptions (no key in DNS, a malformed
    record or signature) propagate, so a test never mistakes a missing key for a broken signature.
    """
    return [bool(dkim.DKIM(message).verify(idx=index, dnsfunc=lookup)) for index in range(len(signature_tags(message)))]


def only_signature(message: bytes, index: int) -> bytes:
    """`message` with every DKIM-Signature header except the `index`-th (topmost first) removed."""
    head, separator, body = message.partition(b"\r\n\r\n")
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept: list[list[bytes]] = []
    seen = 0
    for field in fields:
        if field[0].lower().startswith(b"dkim-signature:"):
            seen += 1
            if seen - 1 != index:
                continue
        kept.append(field)
    if not 0 <= index < seen:
        raise ValueError(f"the message has {seen} DKIM-Signature headers, not {index + 1}")
    return b"\r\n".join(line for field in kept for line in field) + separator + body


def opendkim_unavailable() -> str | None:
    """Why opendkim-testmsg cannot run here, or None."""
    if not os.access(OPENDKIM_TESTMSG, os.X_OK):
        return "opendkim-testmsg is not installed (Debian package opendkim-tools)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=RUN_TIMEOUT, check=False)
    if probe.returncode != 0:
        return f"cannot create a user + mount namespace (unshare -rm): {probe.stderr.decode(errors='replace')}"
    return None


def opendkim_testmsg(message: bytes, nameserver: str, work: Path) -> tuple[int, str]:
    """Verify `message` with opendkim-testmsg, its keys from the name server at `nameserver`:53; (status, stderr).

    Raises when the tool cannot run (`make test` installs it through scripts/system-deps.sh): the
    tests fail rather than skip.
    """
    reason = opendkim_unavailable()
    if reason is not None:
        raise RuntimeError(f"{reason}; `make test` installs it (scripts/system-deps.sh)")
    work.mkdir(parents=True, exist_ok=True)
    message_file = work / "message.eml"
    message_file.write_bytes(message)
    done = subprocess.run(
        ["unshare", "-rm", sys.executable, str(DRIVER), nameserver, str(message_file), str(work)],
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"opendkim driver failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    result = json.loads(done.stdout)
    return int(result["returncode"]), str(result["stderr"])
