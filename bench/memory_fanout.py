"""`python -m bench.memory_fanout`: peak memory of each service for one large message to many domains.

The scenario of issue 11 (item 9): one 10 MB message to 50 destination domains. The queue-manager
splits it into 50 jobs of 10 MB each, the worker delivers them, and every destination defers the
first attempts at the end of DATA (`451`), so each result comes back with the content and is
retried, twice, before the third attempt is accepted. That is the worst case for memory: every
job's content crosses every stage three times, and all of them at once.

It runs the four services as processes (`.venv/bin`, their defaults except the settings below)
against a vhost of its own on the RabbitMQ at 127.0.0.1:5672, with one in-process SMTP peer on a
loopback address as every destination (KUBEMTA_TRANSPORTS=.fanout.test=smtp:[peer]:port), and reports
each service's VmHWM (peak resident memory) after every job was delivered, next to the chart's
memory limits (charts/kubemta/values.yaml). No assertion: figures.

Before it, BENCH_FANOUT_BURST clients (12) each send a message of the same size at the same moment,
so the ingress' budget for message data in flight (KUBEMTA_MESSAGE_DATA_BUDGET) is what bounds its
memory: the answers (queued, or 452 4.3.1 for the sessions over the budget) are reported.

Options: BENCH_FANOUT_SIZE (bytes, 10000000), BENCH_FANOUT_DOMAINS (50), BENCH_FANOUT_DEFERRALS (2),
BENCH_FANOUT_BURST (12); BENCH_KUBEMTA_<NAME> sets KUBEMTA_<NAME> for the services.
"""

import asyncio
import json
import os
import smtplib
import sys
import tempfile
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.kubemta_stack import KubemtaStack
from bench.procstats import sum_status_kib
from bench.rabbitmq import amqp_url, create_vhost, delete_vhost, require_broker
from tests.harness.ports import free_port, random_loopback_net

CHART_LIMITS_MIB = {"ingress": 256, "queue-manager": 256, "dns-resolver": 256, "delivery-worker": 512}
"""resources.limits.memory of each component in charts/kubemta/values.yaml."""
TIMEOUT = 900.0


class DeferringPeer:
    """Every destination: takes each message, answers 451 at the end of DATA `deferrals` times per job, then 250."""

    def __init__(self, deferrals: int) -> None:
        self.deferrals = deferrals
        self.seen: dict[str, int] = {}
        self.delivered: set[str] = set()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd hook
        domain = envelope.rcpt_tos[0].rpartition("@")[2].lower()
        count = self.seen.get(domain, 0) + 1
        self.seen[domain] = count
        if count <= self.deferrals and not domain.startswith("burst"):
            return "451 4.3.0 try again later"
        self.delivered.add(domain)
        return "250 2.0.0 Ok"


def message(size: int, domains: list[str]) -> tuple[list[str], bytes]:
    recipients = [f"user@{domain}" for domain in domains]
    head = (
        b"From: app@sender.test\r\nTo: undisclosed-recipients:;\r\nSubject: large fan-out\r\n"
        b"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <fanout@sender.test>\r\n\r\n"
    )
    line = b"y" * 76 + b"\r\n"
    return recipients, head + line * (max(0, size - len(head)) // len(line))


def send(address: str, port: int, recipients: list[str], content: bytes) -> str:
    """One message; "queued", or the refusal's code and text (e.g. 452 4.3.1 when the ingress budget is full)."""
    with smtplib.SMTP(address, port, timeout=300) as client:
        try:
            client.sendmail("app@sender.test", recipients, content)
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            return f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
        except smtplib.SMTPRecipientsRefused as exc:
            return str(exc.recipients)
    return "queued"


async def burst(address: str, port: int, sessions: int, content: bytes) -> dict[str, int]:
    """`sessions` clients sending a large message each at the same moment: how the ingress answered them."""
    outcomes = await asyncio.gather(
        *(asyncio.to_thread(send, address, port, [f"user@burst{n}.fanout.test"], content) for n in range(sessions))
    )
    tally: dict[str, int] = {}
    for outcome in outcomes:
        key = "queued" if outcome == "queued" else outcome.split(" ", 2)[0] + " " + outcome.split(" ", 2)[1]
        tally[key] = tally.get(key, 0) + 1
    return tally


async def run() -> dict[str, object]:
    size = int(os.environ.get("BENCH_FANOUT_SIZE", "10000000"))
    count = int(os.environ.get("BENCH_FANOUT_DOMAINS", "50"))
    deferrals = int(os.environ.get("BENCH_FANOUT_DEFERRALS", "2"))
    burst_sessions = int(os.environ.get("BENCH_FANOUT_BURST", "12"))
    require_broker()
    prefix = random_loopback_net()
    peer_address, smtp_address = f"{prefix}.2", f"{prefix}.1"
    peer_port, smtp_port = free_port(peer_address), free_port(smtp_address)
    peer = DeferringPeer(deferrals)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(peer, data_size_limit=None, hostname="peer.fanout.test"), peer_address, peer_port
    )
    vhost = create_vhost()
    workdir = Path(tempfile.mkdtemp(prefix="kubemta-bench-fanout-"))
    stack = KubemtaStack(
        workdir,
        amqp_url=amqp_url(vhost),
        smtp_address=smtp_address,
        smtp_port=smtp_port,
        transports=f".fanout.test=smtp:[{peer_address}]:{peer_port}",
        log_level="INFO",
    )
    stack.env.update(KUBEMTA_RETRY_SCHEDULE="2s", KUBEMTA_SMTP_PIPELINING="true")
    stack.env.update({key: value for key, value in os.environ.items() if key.startswith("BENCH_KUBEMTA_")})
    for key in [key for key in stack.env if key.startswith("BENCH_KUBEMTA_")]:
        stack.env[key.removeprefix("BENCH_")] = stack.env.pop(key)
    try:
        await stack.start()
        domains = [f"d{number}.fanout.test" for number in range(count)]
        recipients, content = message(size, domains)
        burst_answers = await burst(smtp_address, smtp_port, burst_sessions, content)
        ingress_after_burst = round(sum_status_kib(stack.pids()["ingress"], "VmHWM") / 1024, 1)
        started = time.monotonic()
        await asyncio.to_thread(send, smtp_address, smtp_port, recipients, content)
        async with asyncio.timeout(TIMEOUT):
            while len([d for d in peer.delivered if d.startswith("d")]) < count:
                stack.check_alive()
                await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        peaks = {name: round(sum_status_kib(pids, "VmHWM") / 1024, 1) for name, pids in stack.pids().items()}
    finally:
        stack.stop()
        server.close()
        delete_vhost(vhost)
    return {
        "message_bytes": len(content),
        "domains": count,
        "deferrals_per_job": deferrals,
        "seconds_to_deliver_all": round(elapsed, 1),
        "burst_sessions": burst_sessions,
        "burst_answers": burst_answers,
        "ingress_peak_rss_mib_after_burst": ingress_after_burst,
        "peak_rss_mib": peaks,
        "chart_limit_mib": CHART_LIMITS_MIB,
        "workdir": str(workdir),
    }


def main() -> int:
    result = asyncio.run(run())
    print(json.dumps(result, indent=2))  # noqa: T201 - the benchmark's output
    print("\n| service | peak RSS MiB | chart limit MiB |\n|---|---|---|")  # noqa: T201
    peaks = result["peak_rss_mib"]
    assert isinstance(peaks, dict)
    for name, limit in CHART_LIMITS_MIB.items():
        print(f"| {name} | {peaks.get(name)} | {limit} |")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
