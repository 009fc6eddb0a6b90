"""Connection reuse against real SMTP peers: one session carries several jobs with RSET
between them, a dead cached session is replaced without failing the job, the idle
cache is bounded per host and in total, and idle sessions QUIT when their time is up."""

import asyncio
import dataclasses

import pytest
from pydantic import SecretStr

from kubemta.v1 import message_pb2
from kubemta_delivery_worker.deliverer import Deliverer
from kubemta_delivery_worker.pool import ConnectionKey, ConnectionPool
from kubemta_delivery_worker.relay_auth import RelayCredentials
from kubemta_delivery_worker.transaction import SmtpConnection, connection_key
from tests.harness.smtp_peer import DROP

DELIVERED = message_pb2.OUTCOME_DELIVERED


def make_pool(idle: float = 5.0, per_host: int = 2, total: int = 64) -> ConnectionPool[SmtpConnection]:
    return ConnectionPool(idle_seconds=idle, per_host=per_host, total=total)


async def test_two_jobs_in_a_row_share_one_connection_with_rset(start_peer, host_of, job, options, metric):
    peer = await start_peer()
    pool = make_pool()
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    reused_before = metric("kubemta_smtp_connections_reused_total")
    opened_before = metric("kubemta_smtp_connections_total", result="ok")
    try:
        [first] = await deliverer.deliver(job([host], ["a@dest.test"]))
        [second] = await deliverer.deliver(job([host], ["b@dest.test"]))
    finally:
        await deliverer.close()

    assert (first.outcome, second.outcome) == (DELIVERED, DELIVERED)
    assert [m.rcpt_tos for m in peer.messages] == [["a@dest.test"], ["b@dest.test"]]
    assert peer.connections == 1
    assert peer.rsets == 1, "RSET before the second transaction (RFC 5321 §4.1.1.5)"
    assert metric("kubemta_smtp_connections_reused_total") == reused_before + 1
    assert metric("kubemta_smtp_connections_total", result="ok") == opened_before + 1


async def test_without_a_pool_every_job_opens_and_quits(start_peer, host_of, job, options):
    peer = await start_peer()
    deliverer = Deliverer(options)
    host = host_of("mx1.dest.test", peer)

    await deliverer.deliver(job([host], ["a@dest.test"]))
    await deliverer.deliver(job([host], ["b@dest.test"]))

    assert peer.connections == 2
    assert peer.rsets == 0


async def test_a_connection_the_peer_closed_is_replaced_without_failing_the_job(start_peer, host_of, job, options):
    peer = await start_peer()
    pool = make_pool()
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    try:
        await deliverer.deliver(job([host], ["a@dest.test"]))
        assert pool.idle_count(connection_key(host, job([host]))) == 1
        peer.drop_connections()  # e.g. the server's own idle timeout
        await asyncio.sleep(0.05)
        [result] = await deliverer.deliver(job([host], ["b@dest.test"]))
    finally:
        await deliverer.close()

    assert result.outcome == DELIVERED
    assert peer.connections == 2
    assert [m.rcpt_tos for m in peer.messages] == [["a@dest.test"], ["b@dest.test"]]


async def test_a_cached_connection_that_fails_rset_is_replaced(start_peer, host_of, job, options, metric):
    peer = await start_peer()
    pool = make_pool()
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    reused_before = metric("kubemta_smtp_connections_reused_total")
    try:
        await deliverer.deliver(job([host], ["a@dest.test"]))
        peer.rset_reply = DROP  # the connection looks fine to the client until RSET meets a closed socket
        [result] = await deliverer.deliver(job([host], ["b@dest.test"]))
    finally:
        await deliverer.close()

    assert result.outcome == DELIVERED
    assert peer.rsets == 1
    assert peer.connections == 2
    assert metric("kubemta_smtp_connections_reused_total") == reused_before
    assert [m.rcpt_tos for m in peer.messages] == [["a@dest.test"], ["b@dest.test"]]


async def test_different_tls_policies_do_not_share_a_connection(start_peer, host_of, job, options):
    peer = await start_peer()
    pool = make_pool()
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    may = job([host], ["a@dest.test"])
    none = job([host], ["b@dest.test"])
    none.route.tls_policy = message_pb2.TLS_POLICY_NONE
    try:
        await deliverer.deliver(may)
        await deliverer.deliver(none)
    finally:
        await deliverer.close()

    assert peer.connections == 2


async def test_idle_connections_quit_when_their_time_is_up(start_peer, host_of, job, options):
    peer = await start_peer()
    pool = make_pool(idle=0.2)
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    try:
        await deliverer.deliver(job([host], ["a@dest.test"]))
        key = connection_key(host, job([host]))
        assert pool.idle_count(key) == 1
        await asyncio.sleep(0.5)
        assert pool.idle_count(key) == 0
        assert len(peer._protocols) == 0, "the expired connection said QUIT and closed"
        await deliverer.deliver(job([host], ["b@dest.test"]))
    finally:
        await deliverer.close()

    assert peer.connections == 2
    assert peer.rsets == 0


async def test_idle_cache_is_bounded_per_host(start_peer, host_of, job, options):
    peer = await start_peer(data_delay=0.2)
    pool = make_pool(per_host=2)
    deliverer = Deliverer(options, pool=pool)
    host = host_of("mx1.dest.test", peer)
    try:
        results = await asyncio.gather(*(deliverer.deliver(job([host], [f"u{i}@dest.test"])) for i in range(4)))
        assert all(r.outcome == DELIVERED for [r] in results)
        assert peer.connections == 4
        assert pool.idle_count(connection_key(host, job([host]))) == 2
        await asyncio.sleep(0.1)
        assert len(peer._protocols) == 2, "the two connections beyond the bound were closed"
    finally:
        await deliverer.close()
    await asyncio.sleep(0.1)
    assert len(peer._protocols) == 0, "close() says QUIT to the idle ones"


async def test_idle_cache_is_bounded_in_total(start_peer, host_of, job, options):
    peers = [await start_peer() for _ in range(3)]
    pool = make_pool(total=2)
    deliverer = Deliverer(options, pool=pool)
    hosts = [host_of(f"mx{i}.dest.test", peer) for i, peer in enumerate(peers)]
    try:
        for host in hosts:
            await deliverer.deliver(job([host]))
        assert len(pool) == 2
        assert pool.idle_count(connection_key(hosts[0], job([hosts[0]]))) == 0, "the oldest made room"
        assert pool.idle_count(connection_key(hosts[2], job([hosts[2]]))) == 1
    finally:
        await deliverer.close()


class _FakeConnection:
    def __init__(self) -> None:
        self.is_connected = True
        self.quits = 0

    async def quit(self) -> None:
        self.quits += 1
        self.is_connected = False


async def test_pool_with_reuse_off_closes_at_once():
    pool: ConnectionPool[_FakeConnection] = ConnectionPool(idle_seconds=0, per_host=2, total=64)
    connection = _FakeConnection()
    key = ConnectionKey("127.0.0.1", 25)

    pool.put(key, connection)
    await asyncio.sleep(0)

    assert pool.take(key) is None
    assert connection.quits == 1


async def test_pool_gives_the_most_recent_connection_and_skips_dead_ones():
    pool: ConnectionPool[_FakeConnection] = ConnectionPool(idle_seconds=5, per_host=3, total=64)
    key = ConnectionKey("127.0.0.1", 25)
    older, newer = _FakeConnection(), _FakeConnection()
    pool.put(key, older)
    pool.put(key, newer)
    newer.is_connected = False

    assert pool.take(key) is older
    assert pool.take(key) is None
    await pool.close()


def test_the_key_carries_the_relay_login_but_never_the_password(job, options):
    host = message_pb2.RouteHost(hostname="smtp.relay.test", address="10.0.0.5", port=587)
    creds = dataclasses.replace(options, relay_credentials=RelayCredentials("relay-user", SecretStr("s3cret")))
    relayed, direct = job([host]), job([host])
    relayed.route.source = "relayhost"

    key = connection_key(host, relayed, creds)

    assert key.identity == "relay-user"
    assert "s3cret" not in repr(key)
    assert connection_key(host, direct, creds).identity == ""
    assert connection_key(host, relayed, options).identity == ""


def test_verified_sessions_are_keyed_by_server_name(job):
    host = message_pb2.RouteHost(hostname="MX1.dest.test.", address="10.0.0.5", port=25)
    verify, may = job([host]), job([host])
    verify.route.tls_policy = message_pb2.TLS_POLICY_VERIFY

    assert connection_key(host, verify).server_name == "mx1.dest.test"
    assert connection_key(host, may).server_name == ""


@pytest.mark.parametrize("identity", ["", "relay-user"])
def test_keys_differ_by_identity(identity):
    same = ConnectionKey("10.0.0.1", 587, 3, identity=identity) == ConnectionKey("10.0.0.1", 587, 3)
    assert same is (identity == "")
