"""A real authoritative DNS server on loopback for tests: NLnet Labs' NSD (Debian package `nsd`).

`DnsServer` writes an nsd.conf and one zone file per zone into a work directory, runs
`nsd -d` (foreground, no chroot, no user switch, every state file inside the work
directory) as a child process and waits until it answers. Point the resolver at
`server.nameserver` ("address:port").

SERVFAIL: a zone listed in `servfail_zones` is configured in nsd.conf without a zone
file. NSD then knows it is authoritative for the zone but has no data, and answers every
query for a name in it with SERVFAIL (verified with NSD 4.6: "zonefile ... does not
exist" at start, then rcode SERVFAIL). Names outside every zone get REFUSED.
"""

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.harness import processes

NSD_CANDIDATES = ("/usr/sbin/nsd", "nsd")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def find_nsd() -> str:
    """The nsd binary, or an error saying how to install it."""
    for candidate in NSD_CANDIDATES:
        path = shutil.which(candidate)
        if path is not None:
            return path
    raise RuntimeError("nsd is not installed: `sudo apt-get install nsd` (make test installs it)")


def random_loopback_address() -> str:
    """A random 127.x.y.53 address (all of 127/8 is loopback on Linux), avoiding systemd-resolved's 127.0.0.53."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.53"


def free_port(address: str) -> int:
    """A port free for both UDP and TCP on `address` (DNS uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((address, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((address, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free UDP+TCP port on {address}")


def zone_text(origin: str, records: list[str], ttl: int = 300, negative_ttl: int = 60) -> str:
    """A zone file for `origin`: $ORIGIN, $TTL, SOA (its minimum = `negative_ttl`, RFC 2308 §4), NS, then `records`.

    Records are zone file lines relative to the origin, e.g. `"@ MX 10 mx1"` or `"mx1 30 A 127.0.0.2"`.
    """
    origin = origin.rstrip(".") + "."
    lines = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 {negative_ttl}",
        f"@ IN NS ns.{origin}",
        *records,
    ]
    return "\n".join(lines) + "\n"


class DnsServer(processes.ManagedServer):
    """NSD serving `zones` (origin -> zone file text) on `address`:`port`."""

    def __init__(
        self, workdir: Path, address: str, port: int, zones: dict[str, str], servfail_zones: Sequence[str] = ()
    ) -> None:
        if not zones:
            raise ValueError("DnsServer needs at least one zone (it waits for that zone's SOA)")
        self.workdir = workdir
        self.address = address
        self.port = port
        self.zones = {origin.rstrip(".") + ".": text for origin, text in zones.items()}
        self.servfail_zones = [origin.rstrip(".") + "." for origin in servfail_zones]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> str:
        """The server as `address:port` (the KUBEMTA_DNS_NAMESERVERS syntax)."""
        return f"{self.address}:{self.port}"

    @property
    def log_path(self) -> Path:
        """NSD's stderr and log file."""
        return self.workdir / "nsd.log"

    def _config(self) -> str:
        work = self.workdir
        lines = [
            "server:",
            f"    ip-address: {self.address}@{self.port}",
            f"    port: {self.port}",
            "    server-count: 1",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            f'    zonesdir: "{work}"',
            f'    pidfile: "{work}/nsd.pid"',
            '    database: ""',
            f'    xfrdfile: "{work}/xfrd.state"',
            f'    xfrdir: "{work}"',
            f'    zonelistfile: "{work}/zone.list"',
            f'    logfile: "{self.log_path}"',
            "    verbosity: 1",
            "    hide-version: yes",
            "remote-control:",
            "    control-enable: no",
        ]
        for index, origin in enumerate(self.zones):
            lines += ["zone:", f'    name: "{origin}"', f'    zonefile: "zone{index}.zone"']
        for index, origin in enumerate(self.servfail_zones):
            lines += ["zone:", f'    name: "{origin}"', f'    zonefile: "servfail{index}.zone"']  # never written
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write the configuration, start nsd and wait (bounded) until it answers for the first zone."""
        if self._process is not None:
            raise RuntimeError("DnsServer already started")
        nsd = find_nsd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for index, text in enumerate(self.zones.values()):
            (self.workdir / f"zone{index}.zone").write_text(text)
        config = self.workdir / "nsd.conf"
        config.write_text(self._config())
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [nsd, "-d", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: stop() can end its server children too
            )
        try:
            self._wait_ready(next(iter(self.zones)))
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, origin: str) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query(origin, "SOA")
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nsd exited with status {self._process.returncode}:\n{self._log()}")
            try:
                response = dns.query.udp(query, self.address, port=self.port, timeout=0.2)
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
                continue
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
            time.sleep(0.05)
        raise RuntimeError(f"nsd did not answer for {origin} within {START_TIMEOUT:.0f}s:\n{self._log()}")

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate nsd (SIGTERM), then kill its process group if it has not exited within a bound."""
        process, self._process = self._process, None
        if process is None:
            return
        processes.stop(process, grace=STOP_TIMEOUT)
