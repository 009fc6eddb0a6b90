"""Only trusted mail is DKIM-signed: kubemta is never a signing oracle for a stranger's From: header.

The ingress marks each AcceptedMessage with its trust decision (authenticated, relay network, or
untrusted: anyone mailing a local domain); the queue-manager signs the first two and its own DSNs,
never the third, whatever keys it holds for the From: domain.
"""

import dkim  # type: ignore[import-untyped]
import pytest

from kubemta.v1 import message_pb2
from kubemta_common.amqp import stages
from kubemta_common.amqp.topology import ROUTE
from kubemta_mail_auth.dkim.keys import KeyStore
from kubemta_mail_auth.dkim.trust import may_sign
from kubemta_queue_manager import metrics
from kubemta_queue_manager.dkim_signer import DkimSigner
from kubemta_queue_manager.handlers import QueueManager
from tests.harness.fake_events import RecordingEvents

FORGED = (
    b"From: The CEO <ceo@example.com>\r\n"
    b"To: staff@example.com\r\n"
    b"Subject: Wire the money today\r\n"
    b"Date: Mon, 02 Mar 2026 12:00:00 +0000\r\n"
    b"Message-ID: <forged-1@attacker.example>\r\n"
    b"\r\n"
    b"Please.\r\n"
)


def accepted(trust: "message_pb2.Trust.ValueType", *, generated: bool = False) -> bytes:
    return message_pb2.AcceptedMessage(
        queue_id="QTRUST",
        sender="ceo@example.com",
        recipients=["staff@example.com"],
        content=FORGED,
        trust=trust,
        generated=generated,
    ).SerializeToString()


def untrusted_count() -> float:
    return float(metrics.DKIM_SIGNATURES.labels(algorithm="none", result="untrusted")._value.get())


async def delivered_content(dkim_zone, publisher, kit, body: bytes) -> bytes:
    manager = QueueManager(
        kit.settings(), publisher, events=RecordingEvents(), signer=DkimSigner(KeyStore(dkim_zone.keys_dir))
    )
    await manager.handle_accepted(stages.INBOUND.decode(body))
    (job,) = [message_pb2.DeliveryJob.FromString(item[1]) for item in publisher.to(ROUTE)]
    return job.content


async def test_mail_from_an_untrusted_client_is_never_signed(dkim_zone, publisher, kit) -> None:
    dkim_zone.generate("example.com", "rsa", "rsa")
    dkim_zone.generate("example.com", "ed", "ed25519")
    before = untrusted_count()
    content = await delivered_content(dkim_zone, publisher, kit, accepted(message_pb2.TRUST_UNTRUSTED))
    assert content == FORGED
    assert b"DKIM-Signature" not in content
    assert untrusted_count() == before + 1


@pytest.mark.parametrize("trust", [message_pb2.TRUST_AUTHENTICATED, message_pb2.TRUST_RELAY_NETWORK])
async def test_mail_from_a_trusted_client_is_signed(dkim_zone, publisher, kit, trust) -> None:
    dkim_zone.generate("example.com", "rsa", "rsa")
    content = await delivered_content(dkim_zone, publisher, kit, accepted(trust))
    assert content.endswith(FORGED)
    assert dkim.DKIM(content).verify(dnsfunc=dkim_zone.dnsfunc)


async def test_a_message_queued_before_the_trust_field_existed_is_untrusted(dkim_zone, publisher, kit) -> None:
    dkim_zone.generate("example.com", "rsa", "rsa")
    old = message_pb2.AcceptedMessage(queue_id="QOLD", sender="a@example.com", recipients=["b@example.org"])
    old.content = FORGED
    content = await delivered_content(dkim_zone, publisher, kit, old.SerializeToString())
    assert b"DKIM-Signature" not in content


def test_kubemtas_own_dsns_are_signed_whatever_the_trust_field_says() -> None:
    dsn = message_pb2.AcceptedMessage(generated=True)
    assert may_sign(dsn)
    assert not may_sign(message_pb2.AcceptedMessage())
