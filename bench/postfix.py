"""Postfix as the reference MTA: the Debian package (installed when missing) and a private instance.

The private instance has its own config_directory, queue_directory and data_directory
under a temporary directory of this run and is started and stopped with
`postfix -c DIR start|stop`; it never touches the system instance (port 25,
/etc/postfix, /var/spool/postfix). Its main.cf holds only what running privately and the
workload need: the private directories, `compatibility_level` of a fresh Debian install,
a host name, loopback-only interfaces, relaying for 127.0.0.0/8 and a static transport to
the sink; its master.cf is the package's with the smtpd on this run's address:port and
chroot off (a private instance has no chroot jail). Everything else keeps Postfix's
defaults (queue, concurrency, process limits). It logs to a file (`maillog_file`,
postlogd), as kubemta's services log to files here.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness.ports import wait_for_port
from tests.harness.processes import log_tail, run

MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
TOOLS = ("postfix", "smtp-source", "smtp-sink")


def installed() -> bool:
    return all(shutil.which(tool) for tool in TOOLS)


def ensure_installed() -> None:
    """Install the `postfix` package when its tools are missing, its own daemon left unconfigured and stopped.

    debconf is preseeded to "No configuration": the package then writes no main.cf and
    does not start the system instance.
    """
    if installed():
        return
    if os.geteuid() != 0:
        raise RuntimeError("postfix (smtp-source, smtp-sink) is missing: run as root or `apt-get install postfix`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        text=True,
        check=True,
        timeout=60,
    )
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"], env=env, timeout=900)
    if not installed():
        raise RuntimeError("apt-get installed postfix but smtp-source/smtp-sink/postfix are still not on PATH")


def version() -> str:
    return run(["postconf", "-d", "-h", "mail_version"]).strip()


def _master_cf(listen: str) -> str:
    """The package's master.cf, smtpd on `listen` instead of port 25, every service without chroot."""
    lines = []
    for line in MASTER_CF.read_text().splitlines():
        fields = line.split()
        if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = listen
            fields[4] = "n"
            line = "  ".join(fields)
        lines.append(line)
    return "\n".join(lines) + "\n"


class PostfixInstance:
    """A private Postfix: smtpd at listen_address:listen_port, relaying bench.test to the sink."""

    def __init__(self, workdir: Path, *, listen_address: str, listen_port: int, transport: str) -> None:
        self.address = listen_address
        self.port = listen_port
        self.root = Path(tempfile.mkdtemp(prefix="kubemta-bench-postfix-", dir=workdir))
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "maillog"
        self.transport = transport
        self.started = False

    def _main_cf(self) -> str:
        return "\n".join(
            [
                "compatibility_level = 3.6",
                f"queue_directory = {self.queue_dir}",
                f"data_directory = {self.data_dir}",
                "myhostname = postfix.bench.test",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "mynetworks = 127.0.0.0/8",
                f"transport_maps = inline:{{ {self.transport} }}",
                "alias_maps =",
                "alias_database =",
                f"maillog_file = {self.log_path}",
                f"maillog_file_prefixes = {self.root}",
                "",
            ]
        )

    def _postfix(self, *args: str) -> str:
        try:
            return run(["postfix", "-c", str(self.config_dir), *args], timeout=60)
        except RuntimeError as exc:  # postfix(1) logs to its maillog_file (or syslog), not to a pipe
            raise RuntimeError(f"{exc}; {self.log_path}: {log_tail(self.log_path, 1500)}") from None

    async def start(self) -> None:
        for directory in (self.root, *self.root.parents):  # the postfix user must reach its queue
            if directory.stat().st_mode & 0o005 != 0o005:
                directory.chmod(directory.stat().st_mode | 0o005)
        for directory in (self.config_dir, self.queue_dir, self.data_dir):
            directory.mkdir(mode=0o755)
        shutil.chown(self.data_dir, "postfix")
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(_master_cf(f"{self.address}:{self.port}"))
        self._postfix("check")
        self.started = True
        self._postfix("start")
        await wait_for_port(self.address, self.port, within=30, what="the private Postfix smtpd")

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def stop(self) -> None:
        """`postfix stop`, and when its master outlives a bound, SIGKILL its process group (by PID)."""
        if not self.started:
            return
        pid = self.master_pid()
        try:
            self._postfix("stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        deadline = time.monotonic() + 20
        while pid is not None and self.master_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid is not None and self.master_pid() is not None:
            try:  # master runs as a session leader: its group is its own, never ours
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.started = False
