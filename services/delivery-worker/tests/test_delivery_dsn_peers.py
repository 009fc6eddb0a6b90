"""The client's DSN parameters (RFC 3461) on the way to the next hop, against real SMTP and LMTP servers on loopback:
passed on to a server that offers DSN, never to one that does not (aiosmtpd's peer refuses what it did not announce
with 555), and every delivered recipient says how it left (RecipientResult.handoff)."""

from collections.abc import AsyncIterator, Callable

import pytest

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from tests.harness.lmtp_peer import LmtpPeer

DELIVERED = message_pb2.OUTCOME_DELIVERED

SUCCESS_FAILURE = message_pb2.RecipientDsn(notify_given=True, notify_success=True, notify_failure=True)


def with_dsn(the_job: message_pb2.DeliveryJob) -> message_pb2.DeliveryJob:
    """RET=HDRS, an ENVID with a space, "+" and "=", and NOTIFY/ORCPT for the first recipient only."""
    the_job.ret = message_pb2.DSN_RET_HDRS
    the_job.envid = "id 1+2=3"
    first = the_job.recipients[0]
    the_job.recipient_dsn[first].CopyFrom(SUCCESS_FAILURE)
    the_job.recipient_dsn[first].orcpt_type = "rfc822"
    the_job.recipient_dsn[first].orcpt_address = "a+x@orig.test"
    return the_job


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
async def test_a_peer_offering_dsn_gets_the_parameters_of_those_that_gave_them(
    start_peer, host_of, job, options, pipelining: bool
) -> None:
    peer = await start_peer(dsn=True, pipelining=pipelining)
    the_job = with_dsn(job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"]))

    results = await Deliverer(options).deliver(the_job)

    size = len(the_job.content)
    assert peer.mail_args == [f"FROM:<alice@sender.test> SIZE={size} RET=HDRS ENVID=id+201+2B2+3D3"]
    assert peer.rcpt_args == [
        "TO:<a@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@orig.test",
        "TO:<b@dest.test>",
    ]
    assert [(r.outcome, r.handoff) for r in results] == [(DELIVERED, message_pb2.HANDOFF_DSN_PASSED)] * 2
    [message] = peer.messages
    assert message.rcpt_tos == ["a@dest.test", "b@dest.test"]


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelined"])
async def test_a_peer_without_dsn_gets_none_of_them_and_the_recipients_are_relayed(
    start_peer, host_of, job, options, pipelining: bool
) -> None:
    peer = await start_peer(pipelining=pipelining)  # DSN not offered: RET/ENVID/NOTIFY/ORCPT would get 555
    the_job = with_dsn(job([host_of("mx1.dest.test", peer)], ["a@dest.test", "b@dest.test"]))

    results = await Deliverer(options).deliver(the_job)

    assert peer.mail_args == [f"FROM:<alice@sender.test> SIZE={len(the_job.content)}"]
    assert peer.rcpt_args == ["TO:<a@dest.test>", "TO:<b@dest.test>"]
    assert [(r.outcome, r.handoff) for r in results] == [(DELIVERED, message_pb2.HANDOFF_RELAYED)] * 2


async def test_a_refused_recipient_has_no_handoff(start_peer, host_of, job, options) -> None:
    peer = await start_peer(dsn=True, rules={"gone": "550 5.1.1 No such user"})
    the_job = with_dsn(job([host_of("mx1.dest.test", peer)], ["gone@dest.test", "b@dest.test"]))

    gone, kept = await Deliverer(options).deliver(the_job)

    assert peer.rcpt_args[0].endswith("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@orig.test")
    assert (gone.outcome, gone.handoff) == (message_pb2.OUTCOME_PERMANENT, message_pb2.HANDOFF_UNSPECIFIED)
    assert (kept.outcome, kept.handoff) == (DELIVERED, message_pb2.HANDOFF_DSN_PASSED)


async def test_a_reused_session_is_judged_by_its_own_ehlo(start_peer, host_of, job, options) -> None:
    """Two jobs on one cached connection: the second's parameters follow the same EHLO answer."""
    from kubemta_delivery_worker.pool import ConnectionPool

    peer = await start_peer(dsn=True)
    pool = ConnectionPool(idle_seconds=30, per_host=2, total=4)  # type: ignore[var-annotated]
    deliverer = Deliverer(options, pool=pool)
    try:
        for _ in range(2):
            [result] = await deliverer.deliver(with_dsn(job([host_of("mx1.dest.test", peer)], ["a@dest.test"])))
            assert result.handoff == message_pb2.HANDOFF_DSN_PASSED
    finally:
        await deliverer.close()
    assert peer.connections == 1
    assert [arg.endswith("RET=HDRS ENVID=id+201+2B2+3D3") for arg in peer.mail_args] == [True, True]


@pytest.fixture
async def lmtp(loopback: Callable[[], str]) -> AsyncIterator[Callable[..., LmtpPeer]]:
    peers: list[LmtpPeer] = []

    def make(**kwargs: object) -> LmtpPeer:
        peer = LmtpPeer(loopback(), 0, users={"a", "b"}, **kwargs)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        await peer.stop()


def lmtp_job(job, peer: LmtpPeer) -> message_pb2.DeliveryJob:
    host = message_pb2.RouteHost(hostname="mailstore.test", address=peer.address, port=peer.port)
    the_job = with_dsn(job([host], ["a@dest.test", "b@dest.test"]))
    the_job.route.kind = message_pb2.TRANSPORT_KIND_LMTP
    the_job.route.source = "transport"
    return the_job


@pytest.mark.parametrize("offered", [True, False], ids=["dsn", "no-dsn"])
async def test_lmtp_is_final_delivery_whether_or_not_the_server_offers_dsn(lmtp, job, options, offered: bool) -> None:
    peer = lmtp(dsn=offered)
    await peer.start()

    results = await Deliverer(options).deliver(lmtp_job(job, peer))

    assert [(r.outcome, r.handoff) for r in results] == [(DELIVERED, message_pb2.HANDOFF_DELIVERED)] * 2
    [mail_arg] = peer.mail_args
    if offered:  # RFC 2033 §4.1: LMTP takes the ESMTP extensions as they are
        assert mail_arg.endswith(" RET=HDRS ENVID=id+201+2B2+3D3")
        assert peer.rcpt_args == [
            "TO:<a@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@orig.test",
            "TO:<b@dest.test>",
        ]
    else:
        assert "RET=" not in mail_arg and "ENVID=" not in mail_arg
        assert peer.rcpt_args == ["TO:<a@dest.test>", "TO:<b@dest.test>"]
    assert len(peer.messages) == 1


async def test_hostile_stored_values_are_dropped_and_the_mail_still_goes(start_peer, host_of, job, options) -> None:
    """Values no client could have given through kubemta's ingress (a bus message written by someone else): each is
    encoded or dropped, so the strict peer (kubemta_common's parser, as Postfix's) never sees a bad line."""
    peer = await start_peer(dsn=True, pipelining=True)
    recipients = ["crlf@dest.test", "long@dest.test", "type@dest.test", "utf8@dest.test"]
    the_job = job([host_of("mx1.dest.test", peer)], recipients)
    the_job.ret = message_pb2.DSN_RET_FULL
    the_job.envid = "caf\u00e9 \r\nRCPT TO:<evil@x.test>"  # non-ASCII: no ENVID can say it (RFC 3461 §4.4)
    hostile = {
        "crlf@dest.test": ("rfc822", "x@y.test\r\nRSET"),
        "long@dest.test": ("utf-8", "\u00e9" * 400 + "@y.test"),  # 400 escapes: over ORCPT's 500 characters
        "type@dest.test": ("rfc822 X=1", "x@y.test"),  # an addr-type that is no atom
        "utf8@dest.test": ("utf-8", "j\u00f6rg+1=\\@\u4f8b\u3048.jp"),  # fine: RFC 6533 escapes
    }
    for rcpt, (addr_type, address) in hostile.items():
        the_job.recipient_dsn[rcpt].CopyFrom(SUCCESS_FAILURE)
        the_job.recipient_dsn[rcpt].orcpt_type = addr_type
        the_job.recipient_dsn[rcpt].orcpt_address = address

    results = await Deliverer(options).deliver(the_job)

    assert [r.outcome for r in results] == [DELIVERED] * 4
    assert peer.mail_args == [f"FROM:<alice@sender.test> SIZE={len(the_job.content)} RET=FULL"]
    assert peer.rcpt_args == [
        "TO:<crlf@dest.test> NOTIFY=SUCCESS,FAILURE",
        "TO:<long@dest.test> NOTIFY=SUCCESS,FAILURE",
        "TO:<type@dest.test> NOTIFY=SUCCESS,FAILURE",
        "TO:<utf8@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;j\\x{F6}rg\\x{2B}1\\x{3D}\\x{5C}@\\x{4F8B}\\x{3048}.jp",
    ]
    assert len(peer.messages) == 1
