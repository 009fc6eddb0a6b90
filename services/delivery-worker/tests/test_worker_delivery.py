"""Delivery against real SMTP peers on loopback: host order, per-recipient outcomes, fallbacks."""

import dataclasses
import logging

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from tests.harness.smtp_peer import DROP

DELIVERED = message_pb2.OUTCOME_DELIVERED
TEMPORARY = message_pb2.OUTCOME_TEMPORARY
PERMANENT = message_pb2.OUTCOME_PERMANENT


async def test_delivers_to_the_first_host(start_peer, host_of, job, options):
    first, second = await start_peer(), await start_peer()
    the_job = job([host_of("mx1.dest.test", first), host_of("mx2.dest.test", second)], ["bob@dest.test"])

    [result] = await Deliverer(options).deliver(the_job)

    assert result.recipient == "bob@dest.test"
    assert result.outcome == DELIVERED
    assert (result.smtp_code, result.status) == (250, "2.0.0")
    assert result.diagnostic == "250 2.0.0 Ok: queued"
    assert result.remote_mta == "mx1.dest.test"
    [message] = first.messages
    assert message.mail_from == "alice@sender.test"
    assert message.rcpt_tos == ["bob@dest.test"]
    assert message.helo == "worker.kubemta.test"
    assert second.connections == 0


async def test_refused_first_host_falls_back_to_the_second(start_peer, host_of, refused_host, job, options, metric):
    second = await start_peer()
    refused_before = metric("kubemta_smtp_connections_total", result="refused")
    ok_before = metric("kubemta_smtp_connections_total", result="ok")
    the_job = job([refused_host("mx1.dest.test"), host_of("mx2.dest.test", second)])

    [result] = await Deliverer(options).deliver(the_job)

    assert result.outcome == DELIVERED
    assert result.remote_mta == "mx2.dest.test"
    assert len(second.messages) == 1
    assert metric("kubemta_smtp_connections_total", result="refused") == refused_before + 1
    assert metric("kubemta_smtp_connections_total", result="ok") == ok_before + 1


async def test_all_hosts_refusing_defers_with_4_4_1(refused_host, job, options):
    first, last = refused_host("mx1.dest.test"), refused_host("mx2.dest.test")
    the_job = job([first, last], ["a@dest.test", "b@dest.test"])

    results = await Deliverer(options).deliver(the_job)

    assert [r.recipient for r in results] == ["a@dest.test", "b@dest.test"]
    for result in results:
        assert result.outcome == TEMPORARY
        assert result.status == "4.4.1"
        assert result.smtp_code == 0
        assert result.diagnostic == f"connect to mx2.dest.test[{last.address}]:{last.port}: Connection refused"
        assert result.remote_mta == ""


async def test_silent_host_times_out_and_the_next_one_is_used(start_peer, host_of, job, options, metric):
    silent, good = await start_peer(silent=True), await start_peer()
    timeouts_before = metric("kubemta_smtp_connections_total", result="timeout")
    fast = dataclasses.replace(options, connect_timeout=0.3)

    [result] = await Deliverer(fast).deliver(job([host_of("mx1.dest.test", silent), host_of("mx2.dest.test", good)]))

    assert result.outcome == DELIVERED
    assert result.remote_mta == "mx2.dest.test"
    assert metric("kubemta_smtp_connections_total", result="timeout") == timeouts_before + 1


async def test_per_recipient_answers_in_one_transaction(start_peer, host_of, job, options):
    peer = await start_peer(rules={"busy": "450 4.2.0 Mailbox busy", "gone": "550 5.1.1 No such user"})
    backup = await start_peer()
    recipients = ["ok@dest.test", "busy@dest.test", "gone@dest.test"]

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", peer), host_of("mx2.dest.test", backup)], recipients)
    )

    by_rcpt = {r.recipient: r for r in results}
    assert [r.recipient for r in results] == recipients
    assert (by_rcpt["ok@dest.test"].outcome, by_rcpt["ok@dest.test"].status) == (DELIVERED, "2.0.0")
    busy, gone = by_rcpt["busy@dest.test"], by_rcpt["gone@dest.test"]
    assert (busy.outcome, busy.smtp_code, busy.status) == (TEMPORARY, 450, "4.2.0")
    assert busy.diagnostic == "450 4.2.0 Mailbox busy"
    assert (gone.outcome, gone.smtp_code, gone.status) == (PERMANENT, 550, "5.1.1")
    assert gone.diagnostic == "550 5.1.1 No such user"
    assert gone.remote_mta == "mx1.dest.test"
    [message] = peer.messages
    assert message.rcpt_tos == ["ok@dest.test"]
    assert backup.connections == 0, "a recipient's 4xx is an answer, not a reason to try the next host"


async def test_data_rejection_applies_to_every_accepted_recipient(start_peer, host_of, job, options):
    peer = await start_peer(rules={"gone": "550 5.1.1 No such user"}, data_reply="554 5.6.0 Content rejected")

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test", "gone@dest.test"])
    )

    by_rcpt = {r.recipient: r for r in results}
    for rcpt in ("a@dest.test", "b@dest.test"):
        assert (by_rcpt[rcpt].outcome, by_rcpt[rcpt].smtp_code, by_rcpt[rcpt].status) == (PERMANENT, 554, "5.6.0")
        assert by_rcpt[rcpt].diagnostic == "554 5.6.0 Content rejected"
    assert by_rcpt["gone@dest.test"].status == "5.1.1"
    assert peer.messages == []
    assert len(peer.refused_messages) == 1


async def test_data_tempfail_defers(start_peer, host_of, job, options):
    peer = await start_peer(data_reply="451 4.3.0 Try again")

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)]))

    assert (result.outcome, result.smtp_code, result.status) == (TEMPORARY, 451, "4.3.0")


async def test_reply_without_enhanced_code_gets_a_derived_status(start_peer, host_of, job, options):
    peer = await start_peer(rules={"x": "550 no such user here", "y": "452 too many"})

    results = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], ["x@dest.test", "y@dest.test"]))

    assert [(r.smtp_code, r.status) for r in results] == [(550, "5.0.0"), (452, "4.0.0")]


async def test_mail_from_4xx_tries_the_next_host(start_peer, host_of, job, options):
    busy = await start_peer(mail_reply="451 4.3.0 Try later")
    good = await start_peer()

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", busy), host_of("mx2.dest.test", good)]))

    assert result.outcome == DELIVERED
    assert result.remote_mta == "mx2.dest.test"
    assert busy.messages == [] and busy.refused_messages == []
    assert len(good.messages) == 1


async def test_mail_from_4xx_on_the_last_host_defers_with_its_reply(start_peer, host_of, job, options):
    busy = await start_peer(mail_reply="451 4.3.0 Try later")

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", busy)]))

    assert (result.outcome, result.smtp_code, result.status) == (TEMPORARY, 451, "4.3.0")
    assert "451 4.3.0 Try later" in result.diagnostic
    assert result.remote_mta == "mx1.dest.test"


async def test_mail_from_5xx_bounces_everything_without_trying_further(start_peer, host_of, job, options):
    strict = await start_peer(mail_reply="553 5.7.1 Sender rejected")
    other = await start_peer()

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", strict), host_of("mx2.dest.test", other)], ["a@dest.test", "b@dest.test"])
    )

    assert [(r.outcome, r.smtp_code, r.status) for r in results] == [(PERMANENT, 553, "5.7.1")] * 2
    assert other.connections == 0


async def test_starttls_with_a_self_signed_certificate(start_peer, host_of, job, options, tls_cert):
    peer = await start_peer(tls_cert=tls_cert)

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)]))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.tls is True
    assert message.helo == "worker.kubemta.test"


async def test_failed_tls_handshake_falls_back_to_plaintext(start_peer, host_of, job, options, tls_cert, metric):
    peer = await start_peer(tls_cert=tls_cert, tls_broken=True)
    tls_failed_before = metric("kubemta_smtp_connections_total", result="tls_failed")

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)]))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.tls is False
    assert peer.connections == 2
    assert metric("kubemta_smtp_connections_total", result="tls_failed") == tls_failed_before + 1


async def test_content_arrives_byte_identical(start_peer, host_of, job, options):
    content = (
        b"From: a@sender.test\r\nSubject: dots\r\n\r\n"
        b".leading dot\r\n.\r\n..two dots\r\nnon-ascii: \xc3\xa9t\xc3\xa9\r\n"
        b"last line\r\n"
    )
    peer = await start_peer()

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], content=content))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.content == content
    assert f"SIZE={len(content)}" in message.mail_options
    assert "BODY=8BITMIME" in message.mail_options


async def test_seven_bit_content_is_sent_without_body_parameter(start_peer, host_of, job, options):
    peer = await start_peer()

    await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)]))

    [message] = peer.messages
    assert not any(option.startswith("BODY=") for option in message.mail_options)
    assert "SMTPUTF8" not in message.mail_options


async def test_null_sender(start_peer, host_of, job, options):
    peer = await start_peer()

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], sender=""))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.mail_from == "", "the peer saw MAIL FROM:<>"


async def test_smtputf8_needed_but_not_offered_bounces_5_6_7(start_peer, host_of, job, options):
    peer = await start_peer(smtputf8=False)

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"], smtputf8=True)
    )

    assert [(r.outcome, r.status) for r in results] == [(PERMANENT, "5.6.7")] * 2
    assert "SMTPUTF8 is required" in results[0].diagnostic
    assert peer.messages == [] and peer.refused_messages == []


async def test_only_non_ascii_recipients_need_smtputf8(start_peer, host_of, job, options):
    peer = await start_peer(smtputf8=False)

    results = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)], ["jörg@dest.test", "a@dest.test"]))

    assert [(r.recipient, r.outcome, r.status) for r in results] == [
        ("jörg@dest.test", PERMANENT, "5.6.7"),
        ("a@dest.test", DELIVERED, "2.0.0"),
    ]
    [message] = peer.messages
    assert message.rcpt_tos == ["a@dest.test"]


async def test_smtputf8_is_used_when_offered(start_peer, host_of, job, options):
    peer = await start_peer(smtputf8=True)

    [result] = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", peer)], ["jörg@dest.test"], sender="rené@sender.test")
    )

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert "SMTPUTF8" in message.mail_options
    assert message.mail_from == "rené@sender.test"
    assert message.rcpt_tos == ["jörg@dest.test"]


async def test_ehlo_refused_falls_back_to_helo(start_peer, host_of, job, options):
    peer = await start_peer(ehlo_reply="502 5.5.2 Error: command not recognized")

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", peer)]))

    assert result.outcome == DELIVERED
    [message] = peer.messages
    assert message.mail_options == [], "without EHLO no extension may be used"


async def test_connection_dropped_mid_transaction_tries_the_next_host(start_peer, host_of, job, options):
    dropping = await start_peer(rules={"b": DROP})
    good = await start_peer()

    results = await Deliverer(options).deliver(
        job([host_of("mx1.dest.test", dropping), host_of("mx2.dest.test", good)], ["a@dest.test", "b@dest.test"])
    )

    assert [(r.outcome, r.remote_mta) for r in results] == [(DELIVERED, "mx2.dest.test")] * 2
    assert dropping.messages == []
    [message] = good.messages
    assert message.rcpt_tos == ["a@dest.test", "b@dest.test"]


async def test_dropped_connection_on_the_last_host_defers(start_peer, host_of, job, options):
    dropping = await start_peer(mail_reply=DROP)

    [result] = await Deliverer(options).deliver(job([host_of("mx1.dest.test", dropping)]))

    assert (result.outcome, result.status) == (TEMPORARY, "4.4.2")
    assert "lost connection with mx1.dest.test" in result.diagnostic


async def test_connection_lost_after_the_final_dot_is_not_retried_elsewhere(
    start_peer, host_of, job, options, caplog: pytest.LogCaptureFixture
):
    dropping = await start_peer(data_reply=DROP)
    other = await start_peer()

    with caplog.at_level(logging.WARNING, logger="kubemta_delivery_worker"):
        [result] = await Deliverer(options).deliver(
            job([host_of("mx1.dest.test", dropping), host_of("mx2.dest.test", other)])
        )

    assert (result.outcome, result.status, result.smtp_code) == (TEMPORARY, "4.4.2", 0)
    assert "may be sent more than once" in result.diagnostic
    assert result.remote_mta == "mx1.dest.test"
    assert len(dropping.refused_messages) == 1, "the peer did get the whole message"
    assert other.connections == 0
    [warning] = [r for r in caplog.records if getattr(r, "duplicate_possible", False)]
    assert warning.queue_id == "Q123TEST"  # type: ignore[attr-defined]  # the deliverer's message_context


async def test_job_without_route_hosts_defers_with_4_4_3(job, options):
    results = await Deliverer(options).deliver(job([], ["a@dest.test", "b@dest.test"]))

    assert [(r.recipient, r.outcome, r.status) for r in results] == [
        ("a@dest.test", TEMPORARY, "4.4.3"),
        ("b@dest.test", TEMPORARY, "4.4.3"),
    ]


async def test_scripted_fail_then_accept(start_peer, host_of, job, options):
    peer = await start_peer(rules={"flaky": ["451 4.3.0 try later", "250 2.1.5 Ok"]})
    the_job = job([host_of("mx1.dest.test", peer)], ["flaky@dest.test"])
    deliverer = Deliverer(options)

    [first] = await deliverer.deliver(the_job)
    [second] = await deliverer.deliver(the_job)

    assert (first.outcome, first.status) == (TEMPORARY, "4.3.0")
    assert second.outcome == DELIVERED
    assert len(peer.messages) == 1
