"""`kubemta-webhooks` as a process: --check-config, ready on the broker, leads alone and says so in its metrics,
delivers to a real receiver, and stops cleanly on SIGTERM."""

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from kubemta.v1 import events_pb2
from tests.harness.ports import free_port
from tests.harness.processes import log_tail, run, spawn, stop

pytestmark = pytest.mark.broker

SCRIPT = str(Path(sys.executable).parent / "kubemta-webhooks")
APP = "system:serviceaccount:shop:billing"


def _env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBEMTA_")}
    env.update(values)
    return env


def test_check_config() -> None:
    with pytest.raises(RuntimeError) as refused:
        run([SCRIPT, "--check-config"], env=_env(KUBEMTA_WEBHOOK_MAX_AGE="soon"), timeout=60)
    assert "KUBEMTA_WEBHOOK_MAX_AGE" in str(refused.value)
    assert "valid" in run([SCRIPT, "--check-config"], env=_env(KUBEMTA_WEBHOOK_RETRY_TIERS="5s,1m"))
    assert "KUBEMTA_WEBHOOKS_FILE" in run([SCRIPT, "--help"], env=_env())


async def _scrape(client: httpx.AsyncClient, port: int) -> dict[str, float]:
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kubemta_webhook"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_the_service_leads_delivers_and_stops_on_sigterm(
    vhost: Any, tmp_path: Path, receivers: Any, producer: Any, kit: Any
) -> None:
    receiver = await receivers()
    path = tmp_path / "webhooks.json"
    secret = receiver.secret
    path.write_text(
        json.dumps(
            [{"name": "billing", "url": receiver.url, "secret": secret, "submitters": [APP], "events": ["delivered"]}]
        )
    )
    metrics_port = free_port()
    env = _env(
        KUBEMTA_AMQP_URL=vhost.url,
        KUBEMTA_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        KUBEMTA_WEBHOOKS_FILE=str(path),
        KUBEMTA_WEBHOOK_LEADER_RETRY="0.5s",
        KUBEMTA_LOG_FORMAT="text",
    )
    log = tmp_path / "webhooks.log"
    process = spawn([SCRIPT], env=env, log_path=log)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            async with asyncio.timeout(60):
                while True:
                    assert process.poll() is None, log_tail(log)
                    try:
                        ready = await client.get(f"http://127.0.0.1:{metrics_port}/readyz")
                        if ready.status_code == 200 and (await _scrape(client, metrics_port)).get(
                            "kubemta_webhook_reader_leader"
                        ):
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
            event: events_pb2.LifecycleEvent = kit("delivered")
            (event_id,) = await producer.record_all([event])
            await receiver.wait_for_ids([event_id])
            delivered = 'kubemta_webhook_deliveries_total{endpoint="billing",result="delivered"}'
            for _ in range(100):  # the receiver saw it before the sender counted its answer: at most 10 s
                scraped = await _scrape(client, metrics_port)
                if scraped.get(delivered):
                    break
                await asyncio.sleep(0.1)
            assert scraped[delivered] == 1
            assert scraped['kubemta_webhook_deliveries_total{endpoint="billing",result="retried"}'] == 0
            assert scraped["kubemta_webhook_events_matched_total"] == 1
            assert "kubemta_webhook_reader_lag_seconds" in scraped
            assert scraped["kubemta_webhook_delivery_seconds_count"] == 1
    finally:
        code = stop(process, grace=20)
    assert code == 0, log_tail(log)
    assert "stopped" in log.read_text()
