"""The operations endpoint: /healthz, /readyz following readiness, /metrics without redirects."""

import asyncio
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from kubemta_common.config_types import ListenAddress
from kubemta_common.http_server import HttpServer, health_app
from kubemta_common.metrics import record_build_info


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
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
        assert await asyncio.to_thread(_get, base + "/healthz") == (200, "application/json", '{"status":"ok"}')
        assert (await asyncio.to_thread(_get, base + "/readyz"))[::2] == (503, '{"status":"not ready"}')
        ready = True
        assert await asyncio.to_thread(_get, base + "/readyz") == (200, "application/json", '{"status":"ready"}')
        assert (await asyncio.to_thread(_get, base + "/healthz", "HEAD"))[::2] == (200, "")  # probes may send HEAD
        assert (await asyncio.to_thread(_get, base + "/healthz", "POST"))[0] == 405
        assert (await asyncio.to_thread(_get, base + "/nothing-here"))[0] == 404
        status, content_type, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'kubemta_build_info{service="test",version="0.1.0"} 1.0' in body
    finally:
        await server.stop()


def test_the_consumer_services_start_without_importing_fastapi() -> None:
    """Their operations endpoint is a plain Starlette app: FastAPI's import cost each of them 0.15-0.2 s of CPU
    at every start (a pod scaling out, every end-to-end test). The ingress and the tracker serve APIs and keep it."""
    modules = ("kubemta_queue_manager", "kubemta_dns_resolver", "kubemta_delivery_worker", "kubemta_webhooks")
    program = "; ".join(f"import {module}.__main__" for module in modules)
    program += "; import sys; print(sorted(name for name in sys.modules if name.split('.')[0] == 'fastapi'))"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
