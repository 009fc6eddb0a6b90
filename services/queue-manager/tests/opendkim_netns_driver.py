"""Runs `opendkim-testmsg` against a throw-away DNS server; started by the DKIM tests as `unshare -rmn python ...`.

opendkim-testmsg has no option for a DNS server or a public key: libopendkim asks the C
library's resolver, which reads /etc/resolv.conf and always uses port 53. Inside a new
user + mount + network namespace this script is root of its own loopback: it brings `lo`
up, bind-mounts a resolv.conf naming 127.0.0.1 over /etc/resolv.conf (only this
namespace sees it), answers TXT queries from a JSON file on 127.0.0.1:53 (UDP) and
prints opendkim-testmsg's exit status and output as JSON.

Usage: driver.py RECORDS.json MESSAGE RESOLV_CONF_PATH, where RECORDS maps a lower-case
name without trailing dot to its TXT character-strings.
"""

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

OPENDKIM_TESTMSG = "/usr/sbin/opendkim-testmsg"


def serve(sock: socket.socket, records: dict[str, list[str]]) -> None:
    while True:
        wire, peer = sock.recvfrom(4096)
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        strings = records.get(question.name.to_text(omit_final_dot=True).lower())
        if question.rdtype == dns.rdatatype.TXT and strings is not None:
            rdata = dns.rdtypes.ANY.TXT.TXT(
                dns.rdataclass.IN, dns.rdatatype.TXT, [text.encode("ascii") for text in strings]
            )
            response.answer.append(dns.rrset.from_rdata(question.name, 60, rdata))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)


def main() -> None:
    records = json.loads(Path(sys.argv[1]).read_text())
    message = Path(sys.argv[2]).read_bytes()
    resolv_conf = Path(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv_conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    subprocess.run(["mount", "--bind", str(resolv_conf), "/etc/resolv.conf"], check=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))
    threading.Thread(target=serve, args=(sock, records), daemon=True).start()
    done = subprocess.run([OPENDKIM_TESTMSG], input=message, capture_output=True, timeout=30)
    result = {"returncode": done.returncode, "stderr": done.stderr.decode("utf-8", "replace")}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
