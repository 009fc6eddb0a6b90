"""Loopback addresses and free ports for one test run (all on 127.0.0.0/8)."""

import random
import socket


def random_loopback_net() -> str:
    """A random `127.a.b` prefix, so concurrent runs do not share addresses."""
    return f"127.{random.randint(16, 250)}.{random.randint(1, 250)}"


def free_port(address: str = "127.0.0.1") -> int:
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
