"""The operations HTTP endpoint every service serves: /metrics, /healthz and /readyz.

uvicorn runs as a task in the service's own event loop; the service owns the signal
handling (so SIGTERM drains the consumers before the process exits).
"""

import asyncio
import contextlib
from collections.abc import Callable, Generator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from kubemta_common.config_types import ListenAddress


def health_app(ready: Callable[[], bool]) -> Starlette:
    """/healthz (the process runs), /readyz (`ready()` is true) and /metrics, for GET and HEAD.

    A plain Starlette app, not FastAPI: the consumer services serve nothing else over HTTP, and FastAPI's import
    (its OpenAPI and parameter models) cost each of them 0.15-0.2 s of CPU at every start."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """A uvicorn server running an ASGI app (the health app, or the ingress' and tracker's FastAPI) as a task in
    the current event loop."""

    def __init__(self, app: ASGIApp, listen: ListenAddress) -> None:
        config = uvicorn.Config(
            app, host=listen.host, port=listen.port, lifespan="off", log_config=None, access_log=False
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; raises if the address cannot be bound."""
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving and wait for the server task."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
