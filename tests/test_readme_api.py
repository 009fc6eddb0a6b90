"""The README's Python example of the sending API, run as written against a real ingress API.

The block after `<!-- readme-api-python -->` runs in a fresh interpreter (standard library only, as the
README promises) against the ingress' API served by uvicorn on a loopback port, with an API key as the
token file; the broker is the FakePublisher and the tracker's Idempotency-Key claims the fake of the unit
tests. It must print the queue id of the message it queued, and print the same id again when run twice
(the Idempotency-Key's replay).
"""

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.config_types import ListenAddress
from kubemta_common.http_server import HttpServer
from kubemta_ingress.acceptance import MailAcceptance
from kubemta_ingress.api import create_app
from kubemta_ingress.api_auth import BearerAuth
from kubemta_ingress.api_keys import ApiKeysFile, ApiKeyVerifier, new_key, render
from kubemta_ingress.api_send import SendingApi
from kubemta_ingress.check_service import CheckLimits, CheckService
from kubemta_ingress.idempotency import Idempotency
from kubemta_ingress.policy import RelayPolicy
from kubemta_ingress.users import Identity
from tests.harness.api_kit import CONFIG, GatedResolver
from tests.harness.fake_idempotency import FakeIdempotencyTracker
from tests.harness.fake_publisher import FakePublisher
from tests.harness.ports import free_port

README = Path(__file__).parent.parent / "README.md"
MARKER = "<!-- readme-api-python -->\n```python\n"
SENDER = "orders@shop.example.com"


def readme_example() -> str:
    text = README.read_text()
    start = text.index(MARKER) + len(MARKER)
    return text[start : text.index("```", start)]


class Running:
    def __init__(self, url: str, token_file: Path, publisher: FakePublisher, claims: FakeIdempotencyTracker) -> None:
        self.url = url
        self.token_file = token_file
        self.publisher = publisher
        self.claims = claims

    def run_example(self, tmp_path: Path) -> subprocess.CompletedProcess[str]:
        script = tmp_path / "example.py"
        script.write_text(readme_example())
        env = {
            "KUBEMTA_API": self.url,
            "KUBEMTA_TOKEN_FILE": str(self.token_file),
            "SENDER": SENDER,
            "RECIPIENT": "alice@example.org",
        }
        return subprocess.run(
            [sys.executable, "-I", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
        )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    made = new_key("shop", (Identity.parse(SENDER),))
    keys = tmp_path / "api-keys"
    keys.write_text(render([made.entry]))
    token_file = tmp_path / "token"
    token_file.write_text(made.token + "\n")
    publisher, claims = FakePublisher(), FakeIdempotencyTracker()
    acceptance = MailAcceptance(
        hostname="mta.readme.test",
        policy=RelayPolicy.create([], []),
        max_recipients=10,
        max_message_size=1 << 20,
        publisher=publisher,
    )
    auth = BearerAuth([ApiKeyVerifier(ApiKeysFile(keys))])
    checks = CheckService(CONFIG, GatedResolver(open_gate=True), CheckLimits())
    app = create_app(checks, auth, SendingApi(acceptance, Idempotency(claims, 86400.0)), max_request=1 << 21)
    listen = ListenAddress("127.0.0.1", free_port())
    server = HttpServer(app, listen)
    async with asyncio.timeout(20):
        await server.start()
    try:
        yield Running(f"http://{listen}", token_file, publisher, claims)
    finally:
        async with asyncio.timeout(20):
            await server.stop()


async def test_the_readme_python_example_sends_a_message_once(running: Running, tmp_path: Path) -> None:
    done = await asyncio.to_thread(running.run_example, tmp_path)
    assert done.returncode == 0, done.stderr
    [published] = running.publisher.published
    queued = message_pb2.AcceptedMessage.FromString(published.body)
    assert done.stdout.strip() == queued.queue_id
    assert queued.sender == SENDER and list(queued.recipients) == ["alice@example.org"]
    assert queued.authenticated_user == "apikey:shop" and list(queued.tags) == ["order"]
    assert b"multipart/alternative" in queued.content

    running.claims.queued(queued.dedup_key.removeprefix("idem:"), queued.queue_id)
    again = await asyncio.to_thread(running.run_example, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == queued.queue_id  # the key's replay: nothing queued twice
    assert len(running.publisher.published) == 1
