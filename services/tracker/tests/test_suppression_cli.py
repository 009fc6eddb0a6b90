"""`kubemta-admin suppression` against a real tracker replica (its API on a loopback port, its index fed by the real
`suppressions` stream): add, list, show, remove, and the exit statuses of a refused token, an unknown address and a
hostile one. The first command runs as a process, as an operator runs it; the others run the same `main` in a
thread of this process (a process start costs seconds on a busy machine)."""

import asyncio
import contextlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from kubemta_admin import suppression_cli
from kubemta_common.config_types import parse_listen
from kubemta_common.http_server import HttpServer
from kubemta_tracker.api import create_app
from tests.harness.ports import free_port

pytestmark = pytest.mark.broker

ADMIN_TOKEN = "admin-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
ADMIN = Path(sys.executable).parent / "kubemta-admin"


class Cli:
    def __init__(self, url: str) -> None:
        self.url = url

    async def run(self, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
        """`kubemta-admin suppression <args>` in a thread: (exit status, stdout, stderr)."""
        return await asyncio.to_thread(self._main, [*args, "--url", self.url, "--token", token])

    @staticmethod
    def _main(argv: list[str]) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = suppression_cli.main(["suppression", *argv])
        return status, out.getvalue(), err.getvalue()

    async def process(self, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str, str]:
        """`kubemta-admin suppression <args>` as a process (URL and token from the environment)."""
        environment = {**os.environ, "KUBEMTA_TRACKER_URL": self.url, "KUBEMTA_ADMIN_TOKEN": token}
        process = await asyncio.create_subprocess_exec(
            str(ADMIN),
            "suppression",
            *args,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def cli(replicas: Callable[..., Any]) -> AsyncIterator[Cli]:
    replica = await replicas("a", sync_timeout=10.0)
    port = free_port()
    listen = parse_listen(f"127.0.0.1:{port}")
    assert listen is not None
    server = HttpServer(create_app(replica.context), listen)
    await server.start()
    try:
        yield Cli(f"http://127.0.0.1:{port}")
    finally:
        await server.stop()


async def test_add_list_show_remove(cli: Cli) -> None:
    status, out, err = await cli.process("add", "Bob@Example.org", "--reason", "asked to stop", "--ttl", "7d")
    assert (status, err) == (0, "")
    assert out.startswith("suppressed bob@example.org until ")
    assert (await cli.run("add", "carol@example.net"))[0] == 0

    status, out, _ = await cli.run("list", token=READ_TOKEN)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "SOURCE", "SINCE", "EXPIRES", "REASON"]
    assert [line.split()[:2] for line in lines[1:]] == [["bob@example.org", "admin"], ["carol@example.net", "admin"]]
    assert lines[1].endswith("asked to stop")
    status, out, _ = await cli.run("list", "--domain", "example.net", "--json", token=READ_TOKEN)
    assert [entry["address"] for entry in json.loads(out)["suppressions"]] == ["carol@example.net"]

    status, out, _ = await cli.run("show", "bob@example.org", token=READ_TOKEN)
    assert status == 0
    assert "source:     admin (by operator)" in out and "reason:     asked to stop" in out

    assert (await cli.run("remove", "BOB@example.org")) == (0, "removed bob@example.org\n", "")
    status, _, err = await cli.run("show", "bob@example.org")
    assert status == 1 and "not found (404)" in err
    assert (await cli.run("remove", "bob@example.org"))[0] == 1
    status, out, _ = await cli.run("list", "--limit", "1")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["carol@example.net"]


async def test_refusals_have_their_exit_status(cli: Cli) -> None:
    status, _, err = await cli.run("add", "bob@example.org", token=READ_TOKEN)
    assert status == 4 and "admin token" in err
    status, _, err = await cli.run("add", "bob@example.org", token="wrong-token-0123456789abcdef")
    assert status == 4
    status, _, err = await cli.run("add", "bob@example.org\x1b[2J", "--reason", "x")
    assert status == 2 and "\x1b" not in err
    status, _, err = await cli.run("add", "bob@example.org", "--ttl", "365d")
    assert status == 2 and "ttl" in err
    status, _, err = await cli.run("add", "bob@example.org", "--ttl", "soon")
    assert status == 2
    status, out, _ = await cli.run("list")
    assert (status, out) == (0, "no suppressed addresses\n")
