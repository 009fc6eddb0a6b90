"""Helpers for the ingress HTTP API tests: a resolver stand-in that blocks on an event, a stepping clock,
and the API served by the real HttpServer (uvicorn) on a free loopback port."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from kubemta_common.config_types import ListenAddress
from kubemta_common.http_server import HttpServer
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_mail_auth.domain_check import CheckConfig
from kubemta_mail_auth.domain_check.dns_queries import Answer, Outcome, RecordType
from tests.harness.ports import free_port

IO_TIMEOUT = 20.0
TOKEN = "kubemta-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = CheckConfig(hostname="mta.api.test")


class GatedResolver:
    """A `Resolver` stand-in: every query waits until `gate` is set, then answers NXDOMAIN.

    `queries[name]` counts the queries per name; `asked(name)` waits (bounded) until `name` was asked;
    `cancelled` counts queries abandoned while waiting (a check cancelled at its deadline).
    """

    def __init__(self, open_gate: bool = False) -> None:
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.queries: Counter[str] = Counter()
        self.cancelled = 0
        self._changed = asyncio.Event()

    async def query(self, name: str, rdtype: RecordType) -> Answer:
        self.queries[name.lower()] += 1
        self._changed.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return Answer(Outcome.NXDOMAIN, detail=f"{name} {rdtype}: no such domain name (NXDOMAIN)")

    def asked_about(self, domain: str) -> int:
        """Queries of `domain` itself (its SPF, MX, ...: the names the check of that domain asks)."""
        return sum(count for name, count in self.queries.items() if name == domain or name.endswith("." + domain))

    async def asked(self, domain: str) -> None:
        async with asyncio.timeout(IO_TIMEOUT):
            while not self.asked_about(domain):
                self._changed.clear()
                await self._changed.wait()


@dataclass
class SteppingClock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    url: str
    service: CheckService

    async def get(self, domain: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=IO_TIMEOUT) as client:
            return await client.get(
                f"{self.url}/v1/domains/{domain}/check", headers=AUTH if headers is None else headers
            )


@asynccontextmanager
async def serve_api(
    resolver: GatedResolver,
    limits: CheckLimits,
    clock: SteppingClock | None = None,
    token: str | None = TOKEN,
) -> AsyncIterator[Api]:
    """The API app with `resolver` and `limits`, served by the real HttpServer on a free loopback port."""
    service = CheckService(CONFIG, resolver, limits, clock or SteppingClock())
    auth = BearerAuth.from_token(SecretStr(token) if token is not None else None)
    listen = ListenAddress("127.0.0.1", free_port())
    server = HttpServer(create_app(service, auth), listen)
    async with asyncio.timeout(IO_TIMEOUT):
        await server.start()
    try:
        yield Api(f"http://{listen}", service)
    finally:
        resolver.gate.set()  # let checks still waiting finish, so the server stops at once
        async with asyncio.timeout(IO_TIMEOUT):
            await server.stop()
