"""Loopback addresses and free ports for one test or benchmark run (all on 127.0.0.0/8)."""

import asyncio
import collections
import os
import random
import socket


def random_loopback_net() -> str:
    """A random `127.a.b` prefix, so concurrent runs do not share addresses."""
    return f"127.{random.randint(16, 250)}.{random.randint(1, 250)}"


PORT_RANGE = (20000, 32000)
"""Where free_port picks: below Linux' ephemeral range (32768-60999 by default), which servers bound to port 0
and outgoing connections take their ports from, so a port picked here cannot be taken by one of those between
the pick and the bind. Each pytest-xdist worker has its own slice, so two workers never pick the same port."""


def _worker_slice() -> range:
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    low, high = PORT_RANGE
    size = (high - low) // count
    return range(low + index * size, low + (index + 1) * size)


_RECENT = collections.deque[int](maxlen=1000)
"""Ports free_port handed out lately in this process. A port picked is free, not yet bound: a test that picks
the SMTP port of a stack and then the metrics ports of its services must not get the same number twice."""


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on `address` right now, outside the ephemeral range (see PORT_RANGE), and not
    one of the last ports this process was given (see _RECENT)."""
    ports = _worker_slice()
    for _ in range(200):
        port = random.choice(ports)
        if port in _RECENT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
            _RECENT.append(port)
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1} on {address}")


def port_answers(address: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections at address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for_port(address: str, port: int, *, within: float, what: str) -> None:
    """Poll until address:port accepts connections; TimeoutError after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await asyncio.to_thread(port_answers, address, port, 0.5):
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(f"{what} did not accept connections at {address}:{port} within {within:.0f} s") from None
