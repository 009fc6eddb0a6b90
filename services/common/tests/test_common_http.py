"""The operations endpoint: /healthz, /readyz following readiness, /metrics without redirects."""

import asyncio
import socket
import urllib.error
import urllib.request

from kubemta_common.config_types import ListenAddress
from kubemta_common.http_server import HttpServer, health_app
from kubemta_common.metrics import record_build_info


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_health_readiness_and_metrics() -> None:
    ready = False
    record_build_info("test")
    port = _free_port()
    server = HttpServer(health_app(lambda: ready), ListenAddress("127.0.0.1", port))
    await server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert (await asyncio.to_thread(_get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(_get, base + "/readyz"))[0] == 503
        ready = True
        assert (await asyncio.to_thread(_get, base + "/readyz"))[0] == 200
        status, content_type, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'kubemta_build_info{service="test",version="0.1.0"} 1.0' in body
    finally:
        await server.stop()
