"""A real mailbox server for tests: Dovecot (Debian `dovecot-lmtpd` + `dovecot-imapd`) on loopback.

`Dovecot` writes a self-contained dovecot.conf into a work directory (nothing included
from /etc; run, state, log and mail directories inside the work directory), then runs
`dovecot -F -c <conf>` (foreground master) as a child in its own process group and waits
(bounded) until LMTP answers. It serves:

- LMTP (RFC 2033) on `address:lmtp_port` and on the unix socket `lmtp_socket`;
- IMAP on `address:imap_port`, plaintext LOGIN allowed (ssl = no), so tests read mail back
  with Python's imaplib.

Users come from a passwd-file (`name:{PLAIN}password`); an LMTP recipient `name@any.domain`
is the mailbox `name` (`username_format = %n`), an unknown one gets `550 5.1.1` at RCPT.

Privileges (verified with Dovecot 2.3.19 on Debian 12): Dovecot refuses UID 0 for mail
access ("userdb returned 0 as uid"), so when the tests run as root the mailboxes belong to
`nobody`, the internal and login users are Debian's `dovecot` and `dovenull`, and every
directory above the work directory must be traversable by `nobody` (pytest's tmp_path,
under a 0700 /tmp/pytest-of-root, is not: use `tempfile.mkdtemp()` in /tmp). When the tests
run unprivileged, everything runs as the current user.
"""

import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

from tests.harness import processes

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "dovecot")
START_TIMEOUT = 15.0
STOP_GRACE = 10.0
# Debian's dovecot-core creates these system users.
ROOT_INTERNAL_USER = "dovecot"
ROOT_LOGIN_USER = "dovenull"
ROOT_MAIL_USER = "nobody"


def find_dovecot() -> str:
    """The dovecot binary, or an error saying how to install it."""
    for candidate in DOVECOT_CANDIDATES:
        path = shutil.which(candidate)
        if path is not None:
            return path
    raise RuntimeError(
        "dovecot is not installed: `sudo apt-get install dovecot-lmtpd dovecot-imapd` (scripts/system-deps.sh)"
    )


def _lmtp_greeting(address: str, port: int) -> bool:
    """True when an LMTP server greets with 220 at address:port (RFC 2033 §4 / RFC 5321 §4.3.1)."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


class Dovecot(processes.ManagedServer):
    """Dovecot with LMTP (TCP and unix socket) and IMAP for `users` (name -> password)."""

    def __init__(self, workdir: Path, address: str, lmtp_port: int, imap_port: int, users: dict[str, str]) -> None:
        self.workdir = workdir
        self.address = address
        self.lmtp_port = lmtp_port
        self.imap_port = imap_port
        self.users = dict(users)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def lmtp_socket(self) -> Path:
        """The LMTP unix socket."""
        return self.workdir / "lmtp.sock"

    @property
    def log_path(self) -> Path:
        """Dovecot's own log (every service)."""
        return self.workdir / "dovecot.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "dovecot.conf"

    def mail_dir(self, user: str) -> Path:
        """The maildir of `user`."""
        return self.workdir / "mail" / user

    def log(self) -> str:
        """Dovecot's log and the master's stdout/stderr, for failure messages."""
        parts = []
        for path in (self.log_path, self.workdir / "master.out"):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                continue
        return "\n".join(parts) or "(no log)"

    def _accounts(self) -> tuple[str, str, int, int]:
        """(internal user, login user, mail uid, mail gid) for the current privileges."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return me.pw_name, me.pw_name, me.pw_uid, me.pw_gid
        mail_user = pwd.getpwnam(ROOT_MAIL_USER)
        return ROOT_INTERNAL_USER, ROOT_LOGIN_USER, mail_user.pw_uid, mail_user.pw_gid

    def _check_traversable(self, uid: int, gid: int) -> None:
        """Every directory above the mail directory must let the mail user through (else Dovecot fails per RCPT)."""
        for directory in self.workdir.resolve().parents:
            mode = directory.stat()
            if (
                mode.st_uid == uid
                or mode.st_mode & stat.S_IXOTH
                or (mode.st_gid == gid and mode.st_mode & stat.S_IXGRP)
            ):
                continue
            raise RuntimeError(
                f"{directory} is not traversable by uid {uid}, so Dovecot cannot reach its mail directory; "
                "put the Dovecot work directory somewhere all users can traverse (e.g. tempfile.mkdtemp())"
            )

    def _config(self, internal_user: str, login_user: str, uid: int, gid: int) -> str:
        work = self.workdir
        return f"""# Written by tests/harness/dovecot.py: self-contained, nothing from /etc.
protocols = lmtp imap
instance_name = kubemta-test-{self.lmtp_port}
base_dir = {work}/run
state_dir = {work}/state
log_path = {self.log_path}
info_log_path = {self.log_path}
listen = {self.address}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {min(uid, 500)}
first_valid_gid = {min(gid, 500)}
mail_location = maildir:{work}/mail/%n
lmtp_rcpt_check_quota = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {work}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {work}/users
  override_fields = uid={uid} gid={gid} home={work}/home/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.address}
    port = {self.lmtp_port}
  }}
  unix_listener {self.lmtp_socket} {{
    mode = 0666
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {self.address}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""

    def start(self) -> None:
        """Write the configuration, start Dovecot and wait (bounded) until LMTP greets."""
        if self._process is not None:
            raise RuntimeError("Dovecot already started")
        binary = find_dovecot()
        internal_user, login_user, uid, gid = self._accounts()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._check_traversable(uid, gid)
        self.workdir.chmod(0o755)
        for name in ("mail", "home"):
            directory = self.workdir / name
            directory.mkdir(exist_ok=True)
            os.chown(directory, uid, gid)
        for name in ("run", "state"):
            (self.workdir / name).mkdir(exist_ok=True)
        users = "".join(f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items())
        users_file = self.workdir / "users"
        users_file.write_text(users)
        users_file.chmod(0o644)  # the auth worker (internal user) reads it
        self.config_path.write_text(self._config(internal_user, login_user, uid, gid))
        self._process = processes.spawn(
            [binary, "-F", "-c", str(self.config_path)], log_path=self.workdir / "master.out"
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited with status {self._process.returncode}:\n{self.log()}")
            if _lmtp_greeting(self.address, self.lmtp_port) and self.lmtp_socket.exists():
                return
            time.sleep(0.1)
        raise RuntimeError(f"dovecot LMTP did not answer within {START_TIMEOUT:.0f}s:\n{self.log()}")

    def stop(self) -> None:
        """Stop the master (SIGTERM to its process group, SIGKILL after a bound), by PID."""
        process, self._process = self._process, None
        if process is not None:
            processes.stop(process, grace=STOP_GRACE)
