"""A real HTTP webhook receiver on 127.0.0.1 for the webhooks tests: verifies Standard Webhooks signatures and
answers what the test asks for.

`WebhookReceiver(secret)` serves POST /hook (uvicorn, in the test's event loop, on a free port). Every
request is kept in `received` (headers, body, the parsed JSON, whether its signature verified with
kubemta_webhooks.signing.verify, and the status it was answered with). By default it answers 204 to a
request that verifies and 401 to one that does not; `plan(500, 500)` makes the next two answers 500,
`plan(410)` a 410 Gone, `plan("hang")` holds the request open until `release()` (or the client gives up).
`delivered` lists the verified requests answered 2xx; `wait_for(n)` waits (bounded) until there are `n`,
`wait_for_ids(ids)` until each of these `webhook-id`s was delivered.
"""

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request, Response

from kubemta_common.config_types import parse_listen
from kubemta_common.http_server import HttpServer
from kubemta_webhooks.signing import VerificationError, verify
from tests.harness.ports import free_port

Answer = int | Literal["hang"]


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A webhook endpoint on 127.0.0.1:<free port>/hook (see the module docstring)."""

    def __init__(self, secret: str, *, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.port = free_port(host)
        self.url = f"http://{host}:{self.port}/hook"
        self.received: list[Received] = []
        self._plan: deque[Answer] = deque()
        self._released = asyncio.Event()
        self._changed = asyncio.Event()
        app = FastAPI()
        app.add_api_route("/hook", self._hook, methods=["POST"])
        listen = parse_listen(f"{host}:{self.port}")
        assert listen is not None
        self._server = HttpServer(app, listen)

    def plan(self, *answers: Answer) -> None:
        """The next answers, in order (then the default again)."""
        self._plan.extend(answers)

    def release(self) -> None:
        """Let every held ("hang") request finish (answered 503)."""
        self._released.set()

    @property
    def delivered(self) -> list[Received]:
        """Verified requests answered 2xx."""
        return [item for item in self.received if item.verified and item.status is not None and item.status < 300]

    async def wait_for(self, count: int, *, within: float = 30.0) -> list[Received]:
        """Wait until `count` requests were delivered; TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while len(self.delivered) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.delivered

    @property
    def delivered_ids(self) -> set[str]:
        """The `webhook-id`s of the delivered requests."""
        return {item.headers.get("webhook-id", "") for item in self.delivered}

    async def wait_for_ids(self, ids: set[str] | list[str], *, within: float = 30.0) -> None:
        """Wait until every one of `ids` was delivered (duplicates allowed); TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            while not set(ids) <= self.delivered_ids:
                self._changed.clear()
                await self._changed.wait()

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            verify(self.secret, headers, body)
            verified = True
        except VerificationError:
            verified = False
        item = Received(headers, body, verified)
        self.received.append(item)
        answer: Answer = self._plan.popleft() if self._plan else (204 if verified else 401)
        if answer == "hang":
            await self._released.wait()
            answer = 503
        item.status = answer
        self._changed.set()
        return Response(status_code=answer)

    async def start(self) -> "WebhookReceiver":
        await self._server.start()
        return self

    async def stop(self) -> None:
        self.release()
        await self._server.stop()
