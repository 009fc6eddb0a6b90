"""Loopback addresses and ports of one benchmark run (127.a.b.0/24, never 127.0.0.1:25)."""

import asyncio
import random
import socket


def random_loopback_prefix() -> str:
    """A random `127.a.b` prefix, so concurrent runs and tests do not share addresses."""
    return f"127.{random.randint(16, 250)}.{random.randint(1, 250)}"


def free_port(address: str) -> int:
    """A TCP port that is free on `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


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
