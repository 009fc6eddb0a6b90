"""Postfix as kubemta's peer in tests: the next hop that offers DSN, and a client submitting through kubemta.

kubemta's DSN support must interoperate with the reference MTA in both directions (issue 16), so the
tests talk to a real Postfix rather than a peer that only imitates RFC 3461. This is the private
instance of bench/postfix.py (own config, queue and data directories under the test's temporary
directory, loopback only, `postfix -c DIR start|stop`, never the system instance) with a main.cf for
that job:

- next hop: its smtpd at `address:port` offers DSN and delivers the mailboxes of `mailbox_domain`
  into Maildirs (virtual(8), as the postfix user), which `mailbox()` reads. Postfix's own DSNs (a
  "delivered" notice for NOTIFY=SUCCESS, a bounce) go to the original sender through the relay host,
  i.e. back through kubemta, so what Postfix received (NOTIFY, ORCPT, ENVID, RET) shows in the
  Original-Recipient, Original-Envelope-Id and returned content of the report it writes;
- client: `sendmail()` submits with Postfix's sendmail(1) `-N notify -R ret -V envid`; Postfix's smtp
  client gives those parameters to the relay host (kubemta's ingress) when it offers DSN.
"""

import email
import email.policy
import re
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path

from bench.postfix import PostfixInstance, ensure_installed
from tests.harness.processes import run

REPLACED_SETTINGS = ("myhostname", "transport_maps")
"""bench's main.cf lines this peer writes otherwise: its own host name, and no static transport (mail
for other domains goes to the relay host, mail for `mailbox_domain` into Maildirs)."""


BOUNCE_TRANSPORT = "error:5.1.1 mailbox is gone"
"""error(8): Postfix accepts the recipient at RCPT and bounces it at delivery, so the bounce is Postfix's own
DSN, written from the NOTIFY, ORCPT, ENVID and RET it received."""


class PostfixPeer(PostfixInstance):
    """A private Postfix: smtpd at address:port for `mailbox_domain`'s `mailboxes` (Maildirs) and `bouncing`
    local parts (accepted, then bounced), relaying the rest to `relayhost` (`host:port`)."""

    def __init__(
        self,
        workdir: Path,
        *,
        address: str,
        port: int,
        hostname: str,
        mailbox_domain: str,
        mailboxes: tuple[str, ...],
        bouncing: tuple[str, ...] = (),
        relayhost: str,
    ) -> None:
        super().__init__(workdir, listen_address=address, listen_port=port, transport="")
        self.hostname = hostname
        self.mailbox_domain = mailbox_domain
        self.mailboxes = mailboxes
        self.bouncing = bouncing
        self.relayhost = relayhost
        self.mail_dir = self.root / "mail"

    def _main_cf(self) -> str:
        host, _, port = self.relayhost.rpartition(":")
        uid, gid = _postfix_ids()
        kept = [line for line in super()._main_cf().splitlines() if line.split(" =")[0] not in REPLACED_SETTINGS]
        mailbox_map = " ".join(f"{local}@{self.mailbox_domain}={local}/" for local in (*self.mailboxes, *self.bouncing))
        bounce_map = ", ".join(f"{{{local}@{self.mailbox_domain}={BOUNCE_TRANSPORT}}}" for local in self.bouncing)
        return "\n".join(
            [
                *[line for line in kept if line],
                f"myhostname = {self.hostname}",
                "mydestination =",
                f"relayhost = [{host}]:{port}",
                f"virtual_mailbox_domains = {self.mailbox_domain}",
                f"virtual_mailbox_base = {self.mail_dir}",
                f"virtual_mailbox_maps = inline:{{ {mailbox_map} }}",
                # smtpd would refuse an error(8) recipient at RCPT: accept it, so that the bounce is asynchronous
                *(
                    [f"transport_maps = inline:{{ {bounce_map} }}", "smtpd_reject_unlisted_recipient = no"]
                    if self.bouncing
                    else []
                ),
                f"virtual_uid_maps = static:{uid}",
                f"virtual_gid_maps = static:{gid}",
                # tests wait seconds, not Postfix's minutes: retry a deferred message soon
                "queue_run_delay = 1s",
                "minimal_backoff_time = 1s",
                "maximal_backoff_time = 2s",
                "",
            ]
        )

    async def start(self) -> None:
        ensure_installed()
        self.mail_dir.mkdir(mode=0o755)
        shutil.chown(self.mail_dir, "postfix", "postfix")
        await super().start()

    def sendmail(self, sender: str, recipient: str, message: bytes, *, notify: str, ret: str, envid: str) -> None:
        """Submit `message` with Postfix's sendmail(1): `-N notify -R ret -V envid -f sender recipient`."""
        command = [
            "sendmail", "-C", str(self.config_dir), "-i",
            "-N", notify, "-R", ret, "-V", envid, "-f", sender, "--", recipient,
        ]  # fmt: skip
        result = subprocess.run(command, input=message, capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stdout!r} {result.stderr!r}")

    def mailbox(self, local: str) -> list[EmailMessage]:
        """The messages delivered to `local`@mailbox_domain's Maildir so far, oldest first."""
        new = self.mail_dir / local / "new"
        paths = sorted(new.iterdir(), key=lambda path: path.stat().st_mtime_ns) if new.is_dir() else []
        return [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in paths]

    def log(self) -> str:
        """Postfix's maillog_file so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def queue_ids_from(self, sender: str) -> list[str]:
        """Postfix's queue ids of the messages it queued from `sender` (its qmgr `from=<...>` log lines), each
        once, in order."""
        found = re.findall(rf"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<{re.escape(sender)}>", self.log())
        return list(dict.fromkeys(found))  # qmgr logs a message again each time it retries it

    def queue_log(self, queue_id: str) -> list[str]:
        """Postfix's log lines about one queued message (from its arrival to `removed`)."""
        return [line for line in self.log().splitlines() if f": {queue_id}: " in line]


def _postfix_ids() -> tuple[int, int]:
    """The postfix user's uid and gid: virtual(8) delivers as them (never as root)."""
    fields = run(["getent", "passwd", "postfix"]).split(":")
    return int(fields[2]), int(fields[3])
