"""KUBEMTA_SMTP_REUSE_PORT: several ingress processes on one host share the SMTP port (SO_REUSEPORT)."""

import asyncio
import smtplib

import pytest

from tests.harness.fake_publisher import FakePublisher
from tests.harness.ingress_kit import build_server
from tests.harness.ports import free_port


def send_one(port: int, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.org"], f"Subject: {subject}\r\n\r\nx\r\n")


async def test_two_listeners_share_a_port_and_both_take_mail() -> None:
    port = free_port()
    publishers = [FakePublisher(), FakePublisher()]
    servers = [build_server(publisher, port=port, reuse_port=True) for publisher in publishers]
    for server in servers:
        await server.start()
    try:
        for index in range(40):
            await asyncio.to_thread(send_one, port, f"m{index}")
            if all(publisher.published for publisher in publishers):
                break
        assert all(publisher.published for publisher in publishers), "the kernel spreads connections over both"
    finally:
        for server in servers:
            await server.stop(1.0)


async def test_without_the_setting_a_second_listener_cannot_bind() -> None:
    port = free_port()
    first = build_server(FakePublisher(), port=port)
    await first.start()
    try:
        with pytest.raises(OSError):
            await build_server(FakePublisher(), port=port).start()
    finally:
        await first.stop(1.0)
