"""Unit tests of the chaos run's parts: the counting sink, the retrying clients, the tally and the options."""

import asyncio
import http.server
import json
import smtplib
import threading
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.chaos.config import SERVICES, TRACKER, from_args
from bench.chaos.explain import explain
from bench.chaos.logscan import scan
from bench.chaos.monkey import ChaosLog
from bench.chaos.report import ChaosResult, each_table, one_table, tally
from bench.chaos.senders import Senders, letters
from tests.harness.mail_sink import MailSink, message_id_of
from tests.harness.smtp_peer import DROP, ScriptedPeer

ADDRESS = "127.0.0.1"


async def _talk(sink: MailSink, payload: bytes, *, read_reply: bool = False) -> bytes:
    """Write `payload` in one go and hang up (after reading what came back, when asked)."""
    reader, writer = await asyncio.open_connection(sink.address, sink.port)
    writer.write(payload)
    await writer.drain()
    replies = b""
    if read_reply:
        async with asyncio.timeout(5):
            while not replies.endswith(b"221 2.0.0 Bye\r\n"):
                chunk = await reader.read(4096)
                if not chunk:
                    break
                replies += chunk
    writer.close()
    return replies


async def _eventually(check: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # type: ignore[operator]  # noqa: ASYNC110 - the sink's count, polled
            await asyncio.sleep(0.01)


MESSAGE = b"Message-ID: <one@test>\r\nSubject: x\r\n\r\nbody\r\n..dot-stuffed\r\n"


async def test_sink_counts_a_message_whose_client_hangs_up_right_after_the_dot() -> None:
    async with MailSink(ADDRESS, 0) as sink:
        await _talk(sink, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + MESSAGE + b".\r\n")
        await _eventually(lambda: sink.total == 1)
    assert sink.deliveries == Counter({"<one@test>": 1})
    [delivery] = sink.log
    assert delivery.mail_from == "a@b" and delivery.rcpt_tos == ("c@d",)


async def test_sink_answers_pipelined_commands_in_order_and_undoes_dot_stuffing() -> None:
    async with MailSink(ADDRESS, 0) as sink:
        replies = await _talk(
            sink,
            b"EHLO c\r\nMAIL FROM:<> SIZE=10\r\nRCPT TO:<c@d>\r\nDATA\r\n" + MESSAGE + b".\r\n"
            b"MAIL FROM:<a@b>\r\nRCPT TO:<e@f>\r\nDATA\r\n" + MESSAGE + b".\r\nQUIT\r\n",
            read_reply=True,
        )
    codes = [line[:3] for line in replies.split(b"\r\n") if line and line[3:4] == b" "]
    assert codes == [b"220", b"250", b"250", b"250", b"354", b"250", b"250", b"250", b"354", b"250", b"221"]
    assert sink.deliveries == Counter({"<one@test>": 2})
    assert sink.log[0].mail_from == "" and sink.log[0].size == len(MESSAGE) - 1


async def test_sink_refuses_data_without_recipients_and_unknown_commands() -> None:
    async with MailSink(ADDRESS, 0) as sink:
        replies = await _talk(sink, b"HELO c\r\nDATA\r\nRCPT TO:<x@y>\r\nVRFY x\r\nQUIT\r\n", read_reply=True)
    assert b"503 5.5.1 RCPT first" in replies and b"503 5.5.1 MAIL first" in replies and b"502 5.5.2" in replies
    assert sink.total == 0


@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="<>\r\n"), min_size=1, max_size=200))
def test_message_id_found_in_headers_only(local: str) -> None:
    message_id = f"<{local}>"
    content = f"Subject: s\r\nmessage-id:  {message_id}\r\n\r\nMessage-ID: <body@x>\r\n".encode()
    assert message_id_of(content) == message_id.encode().decode("ascii", "replace")
    assert message_id_of(b"Subject: s\r\n\r\nMessage-ID: <body@x>\r\n") == ""


@given(st.binary(max_size=2000))
def test_message_id_of_never_fails_on_hostile_bytes(content: bytes) -> None:
    found = message_id_of(content)
    assert found == "" or (found.startswith("<") and found.endswith(">"))


def _senders(port: int, count: int, **options: float) -> Senders:
    return Senders(ADDRESS, port, letters(count, "t", seed=1), clients=2, retry_pause=0.05, give_up=20, **options)


async def test_clients_send_every_message_once_when_nothing_fails() -> None:
    async with MailSink(ADDRESS, 0) as sink:
        senders = _senders(sink.port, 20)
        stats = await asyncio.to_thread(senders.run)
    assert len(stats.accepted) == 20 and stats.retried == 0 and not stats.failures
    assert set(sink.deliveries) == {letter.message_id for letter in senders.mail}
    assert set(sink.deliveries.values()) == {1}


async def test_a_client_sends_the_same_message_again_after_a_4xx_or_a_dropped_connection() -> None:
    peer = ScriptedPeer(ADDRESS, 0, data_reply=["451 4.3.0 try later", DROP, "250 2.0.0 Ok: queued as ABC"])
    async with peer:
        senders = Senders(ADDRESS, peer.port, letters(1, "t", seed=1), clients=1, retry_pause=0.05, give_up=20)
        stats = await asyncio.to_thread(senders.run)
    [letter] = senders.mail
    assert stats.accepted == {letter.message_id: "2.0.0 Ok: queued as ABC"}
    assert stats.retried == 1 and stats.failures["4xx"] == 1 and sum(stats.failures.values()) == 2
    sent = [message.content for message in peer.messages + peer.refused_messages]
    assert len(sent) == 3 and len(set(sent)) == 1  # the same bytes each time


async def test_a_5xx_is_final_and_a_dead_server_is_given_up() -> None:
    async with ScriptedPeer(ADDRESS, 0, mail_reply="550 5.7.1 no") as peer:
        stats = await asyncio.to_thread(_senders(peer.port, 2).run)
    assert len(stats.refused) == 2 and not stats.accepted and stats.retried == 0
    async with MailSink(ADDRESS, 0) as sink:
        port = sink.port
    senders = Senders(ADDRESS, port, letters(1, "t", seed=1), clients=1, retry_pause=0.05, give_up=0.3)
    stats = await asyncio.to_thread(senders.run)
    assert len(stats.gave_up) == 1 and stats.failures["refused connection"] >= 2


def test_letters_are_unique_and_the_same_for_a_seed() -> None:
    mail = letters(50, "r", seed=7)
    assert len({letter.message_id for letter in mail}) == 50
    assert [letter.content for letter in mail] == [letter.content for letter in letters(50, "r", seed=7)]
    assert all(message_id_of(letter.content) == letter.message_id for letter in mail)
    with smtplib.SMTP() as client:  # the bodies need no dot-stuffing surprises: no line starts with a dot
        assert all(b"\r\n." not in letter.content for letter in mail), client


def test_tally_counts_lost_duplicates_and_strangers() -> None:
    mail = letters(4, "x", seed=1)
    ids = [letter.message_id for letter in mail]
    sink = MailSink(ADDRESS, 0)
    for message_id, times in ((ids[0], 1), (ids[1], 3), (ids[3], 1), ("<dsn@mta>", 1)):
        for _ in range(times):
            sink.record("", ["r@x"], f"Message-ID: {message_id}\r\n\r\n".encode())
    senders = Senders(ADDRESS, 1, mail, clients=1)
    senders.stats.accepted = {ids[0]: "ok", ids[1]: "ok", ids[2]: "ok"}
    senders.stats.gave_up = {ids[3]: "timeout"}
    chaos = ChaosLog()
    chaos.kills.update({"ingress": 2})
    result = ChaosResult("quick", 4, 1, False)
    tally(result, mail, senders.stats, sink, chaos)
    assert (result.accepted, result.delivered, result.lost) == (3, 2, [ids[2]])
    assert (result.duplicates, result.duplicated) == (2, [ids[1]])
    assert (result.delivered_unaccepted, result.other_deliveries, result.gave_up) == (1, 1, 1)
    assert not result.ok and "LOST" in one_table(result) and ids[2] in one_table(result)
    assert "NOT met" in each_table([result, ChaosResult("kill-one tracker", 0, 0, False, skipped="not here")])
    clean = ChaosResult(
        "kill-one ingress", 200, 8, True, accepted=200, delivered=200, guards={"ingress client-retry": 2}
    )
    twice = each_table([clean, clean])
    assert "ingress (2 runs) | 400      | 400" in twice and "ingress client-retry 4" in twice and "NOT" not in twice


def test_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHAOS_QUICK", raising=False)
    assert from_args([]).messages == 10_000 and not from_args([]).quick
    assert from_args(["--quick"]).quick and from_args(["--quick"]).messages < 1000
    monkeypatch.setenv("CHAOS_QUICK", "1")
    assert from_args(["--messages", "40"]).messages == 40 and from_args([]).quick
    each = from_args(["--each", "--workdir", str(tmp_path)])
    assert each.kill_one == (*SERVICES, TRACKER) and each.messages == 200 and each.broker_restarts == 0
    assert from_args(["--kill-one", "ingress"]).kill_one == ("ingress",)
    assert from_args(["--kill-one", "ingress", "--repeat", "3"]).repeat == 3
    with pytest.raises(SystemExit):
        from_args(["--kill-one", "postfix"])


def test_log_scan_counts_duplicate_events_and_errors_of_every_process(tmp_path: Path) -> None:
    duplicate = '{"level": "info", "service": "%s", "event": "duplicate", "details": {"reason": "%s"}}\n'
    (tmp_path / "ingress.1.log").write_text(duplicate % ("ingress", "client-retry") + "not json\n")
    (tmp_path / "ingress.log").write_text(
        duplicate % ("ingress", "client-retry") + '{"level": "error", "message": "x"}\n' + '["level": "error"]\n'
    )
    (tmp_path / "delivery-worker.log").write_text(
        duplicate % ("delivery-worker", "redelivered-job") + '{"level": "error", "event": "duplicate"}\n'
    )
    guards, errors = scan(tmp_path)
    assert guards == Counter({"ingress client-retry": 2, "delivery-worker redelivered-job": 1, "delivery-worker ?": 1})
    assert errors == Counter({"ingress": 1, "delivery-worker": 1})


class _FakeTracker(http.server.BaseHTTPRequestHandler):
    """The two tracker routes explain.py reads, answering from MESSAGES and TIMELINES."""

    MESSAGES: dict[str, list[str]] = {
        "<twice@x>": ["Q1", "Q2"],
        "<job@x>": ["Q3"],
        "<copies@x>": ["Q4"],
        "<late@x>": ["Q5"],
        "<gone@x>": [],
    }
    TIMELINES: dict[str, list[tuple[str, str]]] = {
        "Q3": [("routed", "Q3.1"), ("attempted", "Q3.1"), ("attempted", "Q3.1")],
        "Q4": [("routed", "Q4.1"), ("routed", "Q4.1"), ("attempted", "Q4.1"), ("attempted", "Q4.1")],
        "Q5": [("routed", "Q5.1"), ("attempted", "Q5.1")],
    }

    def do_GET(self) -> None:  # noqa: N802 - http.server's hook name
        url = urllib.parse.urlsplit(self.path)
        body: dict[str, object]
        if self.headers.get("Authorization") != "Bearer t0ken":
            body, status = {"detail": "no"}, 401
        elif url.path == "/v1/messages":
            [message_id] = urllib.parse.parse_qs(url.query)["message_id"]
            body, status = {"messages": [{"queue_id": q} for q in self.MESSAGES.get(message_id, [])]}, 200
        else:
            timeline = self.TIMELINES.get(url.path.rsplit("/", 1)[-1], [])
            body, status = {"timeline": [{"kind": kind, "job_id": job} for kind, job in timeline]}, 200
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_explain_names_the_cause_of_each_duplicate_from_the_tracker_timeline() -> None:
    server = http.server.ThreadingHTTPServer((ADDRESS, 0), _FakeTracker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://{ADDRESS}:{server.server_address[1]}"
        causes = explain(base, "t0ken", ["<twice@x>", "<job@x>", "<copies@x>", "<late@x>", "<gone@x>"])
        assert explain(base, "wrong", ["<twice@x>"]) == {"unknown (tracker did not answer)": 1}
    finally:
        server.shutdown()
        server.server_close()
    assert causes == {
        "queued twice (client retry not recognised)": 1,
        "one job attempted twice, routed once": 1,
        "one job routed twice and attempted twice": 1,
        "sent again, first attempt never recorded": 1,
        "not in the tracker's index": 1,
    }


async def test_a_node_restart_starts_the_release_the_node_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under KUBEMTA_TEST_RABBITMQ_ROOT the private node runs another release by chroot; restarting it must start
    that release again on its data, not this machine's (the spawn and the broker's CLI are stood in for)."""
    from bench.chaos import world as chaos_world
    from tests.harness.rabbitmq import BrokerNode, Installation

    root = tmp_path / "sid"
    (root / "usr/lib/rabbitmq/bin").mkdir(parents=True)
    workdir = tmp_path / "rabbitmq"
    workdir.mkdir()
    node = BrokerNode("127.0.0.1", 1, node_name="n@localhost", workdir=workdir, installation=Installation(root))
    spawned: list[list[str]] = []
    monkeypatch.setattr(BrokerNode, "ctl", lambda self, *args: "")
    monkeypatch.setattr(chaos_world, "stop", lambda process, grace: 0)
    monkeypatch.setattr(chaos_world, "spawn", lambda argv, env, log_path: spawned.append(argv))

    async def nothing(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr(chaos_world, "wait_for_port", nothing)
    monkeypatch.setattr(chaos_world, "wait_ready", nothing)
    node.process = object()  # type: ignore[assignment]
    world = type("W", (), {"node": node})()
    await chaos_world.restart_broker(world, "node", 0.0, 1)
    assert spawned == [Installation(root).command("rabbitmq-server", workdir)]
    assert spawned[0][:2] == ["unshare", "--mount"] and spawned[0][-1] == "/usr/lib/rabbitmq/bin/rabbitmq-server"
