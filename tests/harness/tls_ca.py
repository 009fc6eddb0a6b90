"""A throw-away certificate authority for tests (openssl CLI): a CA and leaf certificates it signs.

ca = TestCa.create(tmp_path)
cert, key = ca.issue("mx1.example.test")   # SAN DNS:mx1.example.test
# clients trust ca.cert_file (KUBEMTA_TLS_CA_FILE, KUBEMTA_MTA_STS_CA_FILE)
"""

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT = 60


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT)


@dataclass(frozen=True, slots=True)
class TestCa:
    """A CA certificate and key in `directory`."""

    __test__ = False  # not a pytest test class

    directory: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path, name: str = "kubemta test CA") -> "TestCa":
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca-cert.pem", directory / "ca-key.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return cls(directory, cert, key)

    def issue(self, *names: str) -> tuple[Path, Path]:
        """A leaf certificate for `names` (subjectAltName DNS entries), signed by this CA; (cert, key)."""
        stem = names[0].replace("*", "star")
        cert, key, csr = (self.directory / f"{stem}{suffix}" for suffix in ("-cert.pem", "-key.pem", ".csr"))
        ext = self.directory / f"{stem}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            f"subjectAltName={','.join(f'DNS:{name}' for name in names)}\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={names[0]}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert_file), "-CAkey", str(self.key_file),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return cert, key
