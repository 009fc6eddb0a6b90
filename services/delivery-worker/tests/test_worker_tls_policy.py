"""Route.tls_policy against real STARTTLS peers: may, encrypt, verify, none, MTA-STS mx patterns; SIZE."""

import dataclasses
from pathlib import Path

import pytest

from kubemta.v1 import message_pb2
from kubemta_common.mta_sts_patterns import mx_matches
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.tls import verifying_tls_context
from kubemta_delivery_worker.transaction import SmtpOptions
from tests.harness.tls_ca import TestCa

DELIVERED = message_pb2.OUTCOME_DELIVERED
TEMPORARY = message_pb2.OUTCOME_TEMPORARY
PERMANENT = message_pb2.OUTCOME_PERMANENT
MX = "mx1.dest.test"


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa.create(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture
def verifying(options: SmtpOptions, test_ca: TestCa) -> SmtpOptions:
    return dataclasses.replace(options, verify_tls_context=verifying_tls_context(str(test_ca.cert_file)))


def with_policy(job: message_pb2.DeliveryJob, policy: int, mx: tuple[str, ...] = ()) -> message_pb2.DeliveryJob:
    job.route.tls_policy = policy  # type: ignore[assignment]
    job.route.tls_policy_source = "test"
    job.route.mta_sts_mx.extend(mx)
    return job


async def test_self_signed_certificate_is_delivered_under_may(start_peer, host_of, job, verifying, tls_cert, metric):
    peer = await start_peer(tls_cert=tls_cert)
    before = metric("kubemta_tls_outbound_total", result="encrypted")

    [result] = await Deliverer(verifying).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_MAY))

    assert result.outcome == DELIVERED
    assert [m.tls for m in peer.messages] == [True]
    assert metric("kubemta_tls_outbound_total", result="encrypted") == before + 1


async def test_self_signed_certificate_is_deferred_under_verify(start_peer, host_of, job, verifying, tls_cert, metric):
    peer = await start_peer(tls_cert=tls_cert)
    before = metric("kubemta_tls_outbound_total", result="verify_failed")

    [result] = await Deliverer(verifying).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_VERIFY))

    assert result.outcome == TEMPORARY
    assert result.status == "4.7.5"
    assert "TLS is required, but the certificate of host mx1.dest.test" in result.diagnostic
    assert "self-signed certificate" in result.diagnostic
    assert "TLS policy verify" in result.diagnostic
    assert peer.messages == []
    assert metric("kubemta_tls_outbound_total", result="verify_failed") == before + 1


async def test_ca_signed_certificate_for_the_host_name_is_delivered_under_verify(
    start_peer, host_of, job, verifying, test_ca, metric
):
    peer = await start_peer(tls_cert=test_ca.issue(MX))
    before = metric("kubemta_tls_outbound_total", result="verified")

    [result] = await Deliverer(verifying).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_VERIFY))

    assert result.outcome == DELIVERED
    assert [m.tls for m in peer.messages] == [True]
    assert metric("kubemta_tls_outbound_total", result="verified") == before + 1


async def test_certificate_for_another_name_is_deferred_under_verify_and_the_next_host_used(
    start_peer, host_of, job, verifying, test_ca
):
    wrong = await start_peer(tls_cert=test_ca.issue("other.dest.test"))
    right = await start_peer(tls_cert=test_ca.issue("mx2.dest.test"))
    hosts = [host_of(MX, wrong), host_of("mx2.dest.test", right)]

    [result] = await Deliverer(verifying).deliver(with_policy(job(hosts), message_pb2.TLS_POLICY_VERIFY))

    assert result.outcome == DELIVERED
    assert wrong.messages == [] and len(right.messages) == 1


async def test_encrypt_against_a_peer_without_starttls_is_deferred(start_peer, host_of, job, options, metric):
    peer = await start_peer()
    before = metric("kubemta_tls_outbound_total", result="not_offered")

    [result] = await Deliverer(options).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_ENCRYPT))

    assert result.outcome == TEMPORARY
    assert result.status == "4.7.4"
    assert result.diagnostic.startswith("TLS is required, but was not offered by host mx1.dest.test")
    assert peer.messages == []
    assert metric("kubemta_tls_outbound_total", result="not_offered") == before + 1


async def test_encrypt_accepts_a_self_signed_certificate(start_peer, host_of, job, options, tls_cert):
    peer = await start_peer(tls_cert=tls_cert)

    [result] = await Deliverer(options).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_ENCRYPT))

    assert result.outcome == DELIVERED
    assert peer.messages[0].tls is True


async def test_encrypt_does_not_fall_back_to_plaintext_after_a_failed_handshake(
    start_peer, host_of, job, options, tls_cert
):
    peer = await start_peer(tls_cert=tls_cert, tls_broken=True)

    [result] = await Deliverer(options).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_ENCRYPT))

    assert result.outcome == TEMPORARY
    assert "TLS is required, but the TLS handshake with host mx1.dest.test" in result.diagnostic
    assert peer.messages == [] and peer.connections == 1


async def test_none_never_starts_tls(start_peer, host_of, job, options, tls_cert):
    peer = await start_peer(tls_cert=tls_cert)

    [result] = await Deliverer(options).deliver(with_policy(job([host_of(MX, peer)]), message_pb2.TLS_POLICY_NONE))

    assert result.outcome == DELIVERED
    assert peer.messages[0].tls is False


async def test_mta_sts_patterns_refuse_a_non_matching_host(start_peer, host_of, job, verifying, test_ca, metric):
    outsider = await start_peer(tls_cert=test_ca.issue("mx.elsewhere.test"))
    insider = await start_peer(tls_cert=test_ca.issue("mx1.dest.test"))
    hosts = [host_of("mx.elsewhere.test", outsider), host_of(MX, insider)]
    before = metric("kubemta_tls_outbound_total", result="mx_mismatch")

    the_job = with_policy(job(hosts), message_pb2.TLS_POLICY_VERIFY, ("*.dest.test",))
    [result] = await Deliverer(verifying).deliver(the_job)

    assert result.outcome == DELIVERED
    assert outsider.messages == [] and len(insider.messages) == 1
    assert metric("kubemta_tls_outbound_total", result="mx_mismatch") == before + 1


async def test_message_larger_than_the_server_size_is_bounced_without_sending(start_peer, host_of, job, options):
    peer = await start_peer()  # aiosmtpd announces "SIZE 33554432" (its data_size_limit)
    line = b"x" * 998 + b"\r\n"
    big = b"Subject: big\r\n\r\n" + line * (33554432 // len(line) + 1)
    the_job = job([host_of(MX, peer)], ("a@dest.test", "b@dest.test"), content=big)

    results = await Deliverer(options).deliver(the_job)

    assert [r.outcome for r in results] == [PERMANENT, PERMANENT]
    assert {r.status for r in results} == {"5.3.4"}
    assert f"message size {len(big)} exceeds size limit 33554432 of server mx1.dest.test" in results[0].diagnostic
    assert peer.messages == [] and peer.refused_messages == []


async def test_message_within_the_server_size_is_sent_with_size_parameter(start_peer, host_of, job, options):
    peer = await start_peer()

    [result] = await Deliverer(options).deliver(job([host_of(MX, peer)]))

    assert result.outcome == DELIVERED
    assert any(option.startswith("SIZE=") for option in peer.messages[0].mail_options)


@pytest.mark.parametrize(
    ("host", "patterns", "expected"),
    [
        ("mx1.example.com", ["mx1.example.com"], True),
        ("MX1.Example.com.", ["mx1.example.com"], True),
        ("mx1.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], False),
        ("example.com", ["*.example.com"], False),
        ("mx1.example.org", ["*.example.com", "mx1.example.com"], False),
    ],
)
def test_mx_pattern_matching(host, patterns, expected):
    assert mx_matches(host, patterns) is expected
