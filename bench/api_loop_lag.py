"""`python -m bench.api_loop_lag`: how long one large HTTP API request holds up the ingress' event loop.

The ingress serves SMTP, the HTTP API and its health probes from one event loop. This sends one request to the
ingress' real FastAPI app (in this process, over httpx's ASGI transport, its broker a stand-in that confirms at
once) while a ticker task on the same loop sleeps 1 ms at a time and records how late it wakes: the largest lateness
is the longest the loop answered nothing else. Each request shape runs twice: as the ingress does it (bodies over
`IN_LOOP_BODY` built in a worker thread) and with everything on the loop (`IN_LOOP_BODY` set past the body), to show
what the thread buys.

Shapes: 1,000 named recipients (the default KUBEMTA_MAX_RECIPIENTS); a 7.4 MB attachment (a 10 MB message); the
bench's 1 KiB text message (under the threshold: on the loop either way). The objects made at start-up are frozen
out of the garbage collector first, as the services do (gc_tuning.py). No assertion: figures.
"""

import asyncio
import base64
import gc
import os
import sys
import time
from typing import Any

import httpx
from pydantic import SecretStr

from kubemta_ingress import api_request_message
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth, Principal, StaticTokenVerifier
from kubemta_ingress.api_send import SendingApi
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_ingress.idempotency import Idempotency
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.recipient_verify import RecipientVerifier
from kubemta_ingress.users import Identity
from tests.harness.api_kit import CONFIG, GatedResolver
from tests.harness.fake_idempotency import FakeIdempotencyTracker
from tests.harness.fake_publisher import FakePublisher

APP_TOKEN = "bench-app-token-0123456789abcdef"
APP = Principal("api-key", "apikey:bench", (Identity.parse("shop.example"),))
TICK = 0.001


class _Tokens:
    async def verify(self, token: str) -> Principal | None:
        return APP if token == APP_TOKEN else None


def _app() -> Any:
    acceptance = MailAcceptance(
        hostname="mta.bench.test",
        policy=RelayPolicy.create([], []),
        max_recipients=1000,
        max_message_size=10_240_000,
        publisher=FakePublisher(),
        max_hops=20,
        recipients=RecipientVerifier(maps={}, lmtp={}, prober=None),
    )
    auth = BearerAuth([StaticTokenVerifier(SecretStr("operator-" + APP_TOKEN)), _Tokens()])
    checks = CheckService(CONFIG, GatedResolver(open_gate=True), CheckLimits())
    sending = SendingApi(acceptance, Idempotency(FakeIdempotencyTracker(), 86400.0))
    return create_app(checks, auth, sending, max_request=20_000_000, request_timeout=60)


def shapes() -> dict[str, dict[str, Any]]:
    sender = {"address": "orders@shop.example"}
    return {
        "1,000 named recipients": {
            "from": sender,
            "subject": "x",
            "text": "x",
            "to": [{"address": f"user{index}@example.net", "name": f"Üser {index}"} for index in range(1000)],
        },
        "7.4 MB attachment": {
            "from": sender,
            "to": [{"address": "bob@example.net"}],
            "subject": "x",
            "text": "x",
            "attachments": [
                {
                    "filename": "data.bin",
                    "content_type": "application/octet-stream",
                    "content": base64.b64encode(os.urandom(7_400_000)).decode("ascii"),
                }
            ],
        },
        "1 KiB text": {"from": sender, "to": [{"address": "bob@example.net"}], "subject": "x", "text": "y" * 1024},
    }


async def measure(app: Any, body: dict[str, Any]) -> tuple[int, float, float]:
    """(status, the request's seconds, the ticker's largest lateness in seconds) for one request."""
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(TICK)
            lateness.append(time.monotonic() - before - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK * 3)
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress", timeout=120) as client:
        started = time.monotonic()
        answer = await client.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {APP_TOKEN}"})
        took = time.monotonic() - started
    done.set()
    await task
    return answer.status_code, took, max(lateness, default=took)


async def _main() -> int:
    app = _app()
    requests = shapes()
    gc.collect()
    gc.freeze()
    threshold = api_request_message.IN_LOOP_BODY
    sys.stdout.write(f"largest event loop lateness during one POST /v1/messages (ticker of {TICK * 1000:.0f} ms)\n")
    for name, body in requests.items():
        for mode, limit in (("as shipped", threshold), ("all on the loop", sys.maxsize)):
            api_request_message.IN_LOOP_BODY = limit
            status, took, late = await measure(app, body)
            sys.stdout.write(
                f"{name:24} {mode:16} HTTP {status}  request {took * 1000:7.1f} ms  loop late {late * 1000:7.1f} ms\n"
            )
    api_request_message.IN_LOOP_BODY = threshold
    return 0


def main() -> int:
    return asyncio.run(_main())


if __name__ == "__main__":
    raise SystemExit(main())
