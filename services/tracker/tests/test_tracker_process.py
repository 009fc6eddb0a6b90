"""`kubemta-tracker` as a process: --check-config, ready once caught up, the API answers, SIGTERM stops it cleanly."""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.ports import free_port
from tests.harness.processes import log_tail, run, spawn, stop

pytestmark = pytest.mark.broker

SCRIPT = str(Path(sys.executable).parent / "kubemta-tracker")
READ = "read-token-0123456789abcdef"


def _env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}
    env.update(values)
    return env


def test_check_config_refuses_a_short_token() -> None:
    with pytest.raises(RuntimeError) as refused:
        run([SCRIPT, "--check-config"], env=_env(KUBEMTA_TRACKER_READ_TOKENS="cli:leakedsecret1"), timeout=60)
    assert "KUBEMTA_TRACKER_READ_TOKENS" in str(refused.value)
    assert "leakedsecret1" not in str(refused.value)  # the token is not echoed
    assert "valid" in run([SCRIPT, "--check-config"], env=_env(KUBEMTA_TRACKER_READ_TOKENS=f"cli:{READ}"))


async def test_the_service_serves_the_api_and_stops_on_sigterm(vhost: Any, tmp_path: Path) -> None:
    api_port, metrics_port = free_port(), free_port()
    env = _env(
        KUBEMTA_AMQP_URL=vhost.url,
        KUBEMTA_TRACKER_LISTEN=f"127.0.0.1:{api_port}",
        KUBEMTA_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        KUBEMTA_INDEX_PATH=str(tmp_path / "index.sqlite3"),
        KUBEMTA_TRACKER_READ_TOKENS=f"cli:{READ}",
        KUBEMTA_LOG_FORMAT="text",
    )
    log = tmp_path / "tracker.log"
    process = spawn([SCRIPT], env=env, log_path=log)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            async with asyncio.timeout(60):
                while True:
                    assert process.poll() is None, log_tail(log)
                    try:
                        ready = await client.get(f"http://127.0.0.1:{metrics_port}/readyz")
                        if ready.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            base = f"http://127.0.0.1:{api_port}"
            found = await client.get(f"{base}/v1/messages", headers={"Authorization": f"Bearer {READ}"})
            assert found.status_code == 200 and found.json() == {"messages": []}
            assert (await client.get(f"{base}/v1/messages")).status_code == 401
            summary = await client.get(f"{base}/v1/queue/summary", headers={"Authorization": f"Bearer {READ}"})
            assert summary.status_code == 200 and summary.json()["broker"]["inbound"] == 0
            metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            assert "kubemta_tracker_indexed_records_total" in metrics
    finally:
        code = stop(process, grace=20)
    assert code == 0, log_tail(log)
    assert (tmp_path / "index.sqlite3").exists()
    assert "stopped" in log.read_text()
