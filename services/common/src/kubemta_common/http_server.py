"""The operations HTTP endpoint every service serves: /metrics, /healthz and /readyz.

uvicorn runs as a task in the service's own event loop; the service owns the signal
handling (so SIGTERM drains the consumers before the process exits).
"""

import asyncio
import contextlib
from collections.abc import Callable, Generator

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubemta_common.config_types import ListenAddress


def health_app(ready: Callable[[], bool]) -> FastAPI:
    """/healthz (the process runs), /readyz (`ready()` is true) and /metrics."""
    app = FastAPI(title="kubemta operations", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(response: Response) -> dict[str, str]:
        if ready():
            return {"status": "ready"}
        response.status_code = 503
        return {"status": "not ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the service decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """A uvicorn server running as a task in the current event loop."""

    def __init__(self, app: FastAPI, listen: ListenAddress) -> None:
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
