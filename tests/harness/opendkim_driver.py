"""Runs `opendkim-testmsg` against a real name server on loopback port 53; started as `unshare -rm python ...`.

opendkim-testmsg has no option for a DNS server or a public key: libopendkim asks the C
library's resolver, which reads /etc/resolv.conf and always uses port 53. Inside a new
user + mount namespace (no new network namespace, so this host's loopback addresses
stay reachable) this script bind-mounts a resolv.conf naming the test's name server
over /etc/resolv.conf (only this namespace sees it), checks that the C library now
sees that file, runs opendkim-testmsg on the message and prints its exit status and
stderr as JSON.

Usage: opendkim_driver.py NAMESERVER_ADDRESS MESSAGE_FILE WORK_DIR
"""

import json
import subprocess
import sys
from pathlib import Path

OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"
TESTMSG_TIMEOUT = 30


def main() -> None:
    nameserver, message_file, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    resolv_conf = work / "resolv.conf"
    resolv_conf.write_text(f"nameserver {nameserver}\noptions attempts:2 timeout:2\n")
    subprocess.run(["mount", "--bind", str(resolv_conf), "/etc/resolv.conf"], check=True, timeout=10)
    seen = Path("/etc/resolv.conf").read_text()
    if seen != resolv_conf.read_text():
        raise SystemExit(f"/etc/resolv.conf was not replaced: {seen!r}")
    done = subprocess.run(
        [OPENDKIM_TESTMSG], input=message_file.read_bytes(), capture_output=True, timeout=TESTMSG_TIMEOUT
    )
    result = {"returncode": done.returncode, "stderr": done.stderr.decode("utf-8", "replace")}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
