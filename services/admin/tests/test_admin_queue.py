"""`kubemta-admin queue` against a loopback stand-in of the tracker API (conftest.py `tracker`): what each verb
asks (path, parameters, body, bearer token), what it prints (Postfix-like tables, human times and ages), its exit
status (0 ok, 1 not found, 2 usage, 3 unreachable/5xx/nonsense, 4 token refused) and hostile answers (bad JSON,
huge bodies, control characters, wrong types) handled in one escaped line, never a traceback or the token."""

import json
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_admin import queue_cli, tracker_http
from kubemta_admin.__main__ import run
from kubemta_admin.text import cell, human_age, human_time, printable

TOKEN = "admin-s3cret-token-xyz"

SUMMARY = {
    "stages": {
        "inbound": {"messages": 0, "oldest_seconds": 0.0},
        "route": {"messages": 2, "oldest_seconds": 192.7},
        "deliver": {"messages": 1, "oldest_seconds": 5},
        "results": {"messages": 0, "oldest_seconds": None},
        "held": {"messages": 1, "oldest_seconds": 7500},
    },
    "retry": {"retry.1h": {"jobs": 1, "oldest_seconds": 3700}, "retry.5m": {"jobs": 3, "oldest_seconds": 250}},
    "domains": [{"domain": "customer.example", "jobs": 4, "deferred": 3, "oldest_seconds": 3700}],
    "broker": {"route": 2, "deliver": 1},
}
MESSAGE = {
    "queue_id": "4FJ2K8Q1ZB",
    "message_id": "<invoice-42@shop.example>",
    "sender": "billing@shop.example",
    "recipients": ["bob@customer.example", "carol@other.example"],
    "received_at": "2026-12-05T10:02:11Z",
    "size": 18342,
    "state": "retry.5m",
}
DETAIL = {
    **MESSAGE,
    "client_address": "10.1.2.3",
    "client_helo": "shop-7f9c",
    "authenticated_user": None,
    "trust": "relay-network",
    "listener": "smtp",
    "headers": "From: Billing <billing@shop.example>\r\nSubject: Invoice 42\r\n\tcontinued\r\n",
    "jobs": [
        {
            "job_id": "4FJ2K8Q1ZB.1",
            "domain": "customer.example",
            "recipients": ["bob@customer.example"],
            "state": "retry.5m",
            "attempts": 2,
            "next_attempt": "2026-12-05T10:12:11+00:00",
        }
    ],
    "timeline": [
        {
            "time": "2026-12-05T10:02:11.123Z",
            "service": "smtp-ingress",
            "source": "ingress-0",
            "kind": "received",
            "job_id": "",
            "attempt": None,
            "details": {"client": "10.1.2.3", "size": 18342},
        },
        {
            "time": "2026-12-05T10:02:12Z",
            "service": "delivery-worker",
            "source": "w-1",
            "kind": "attempted",
            "job_id": "4FJ2K8Q1ZB.1",
            "attempt": 1,
            "details": {
                "recipients": [
                    {
                        "recipient": "bob@customer.example",
                        "outcome": "OUTCOME_TEMPORARY",
                        "smtp_code": 451,
                        "status": "4.7.1",
                        "diagnostic": "try later",
                        "remote_mta": "mx.customer.example",
                    }
                ]
            },
        },
        {
            "time": "2026-12-05T10:02:12Z",
            "service": "queue-manager",
            "source": "qm-0",
            "kind": "queued",
            "job_id": "",
            "attempt": 0,
            "details": {
                "jobs": [
                    {"job_id": "4FJ2K8Q1ZB.1", "domain": "customer.example", "recipients": ["bob@customer.example"]},
                    {"unknown": ["shape"]},
                ]
            },
        },
    ],
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEMTA_TRACKER_URL", raising=False)
    monkeypatch.setenv("KUBEMTA_ADMIN_TOKEN", TOKEN)


def queue(tracker, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = run(["queue", *args, "--url", tracker.url])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "Traceback" not in err
    return status, out, err


def test_admin_lists_the_queue_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["--help"])
    assert exited.value.code == 0
    assert "{users,api-keys,domains,dkim,queue,suppression}" in capsys.readouterr().out


def test_summary_prints_stages_retry_tiers_and_domains_with_ages(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/queue/summary", SUMMARY)
    status, out, _ = queue(tracker, "summary", capsys=capsys)
    assert status == 0
    assert tracker.last().headers["Authorization"] == f"Bearer {TOKEN}"
    lines = out.splitlines()
    assert lines[0].split() == ["STAGE", "MESSAGES", "OLDEST"]
    assert lines[1].split() == ["inbound", "0", "-"]
    assert lines[2].split() == ["route", "2", "3m12s"]
    assert lines[5].split() == ["held", "1", "2h05m"]
    retry = lines.index("RETRY TIER  JOBS  OLDEST")
    assert [line.split() for line in lines[retry + 1 : retry + 3]] == [
        ["retry.5m", "3", "4m10s"],
        ["retry.1h", "1", "1h01m"],
    ]
    assert ["customer.example", "4", "3", "1h01m"] in [line.split() for line in lines]
    assert ["deliver", "1"] in [line.split() for line in lines]


def test_list_is_mailq_like_and_filters_on_this_side_too(tracker, capsys) -> None:
    done = {**MESSAGE, "queue_id": "DONE1", "state": "done"}
    held = {**MESSAGE, "queue_id": "HELD1", "state": "held", "sender": "", "recipients": ["x@elsewhere.example"]}
    tracker.answer("GET", "/v1/messages", {"messages": [MESSAGE, done, held]})
    status, out, _ = queue(tracker, "list", capsys=capsys)
    assert status == 0
    assert tracker.last().query == {"limit": ["1000"], "state": ["open"]}
    assert out.splitlines() == [
        "QUEUE ID     SIZE  ARRIVAL              STATE     SENDER / RECIPIENTS",
        "4FJ2K8Q1ZB  18342  2026-12-05 10:02:11  retry.5m  billing@shop.example",
        "                                                    bob@customer.example",
        "                                                    carol@other.example",
        "HELD1       18342  2026-12-05 10:02:11  held      <>",
        "                                                    x@elsewhere.example",
        "-- 2 messages, 36684 bytes",
    ]
    status, out, _ = queue(
        tracker, "list", "--domain", "Customer.Example", "--sender", "billing@shop.example", capsys=capsys
    )
    assert status == 0
    assert tracker.last().query == {
        "sender": ["billing@shop.example"],
        "domain": ["Customer.Example"],
        "limit": ["1000"],
        "state": ["open"],
    }
    assert "4FJ2K8Q1ZB" in out and "HELD1" not in out  # the stand-in ignores the filters; the CLI applies them too
    tracker.answer("GET", "/v1/messages", {"messages": [done]})
    status, out, _ = queue(tracker, "list", "--state", "done", capsys=capsys)
    assert tracker.last().query == {"state": ["done"], "limit": ["1000"]}
    assert "DONE1" in out
    tracker.answer("GET", "/v1/messages", {"messages": [MESSAGE, done, held]})
    status, out, _ = queue(tracker, "list", "--all", capsys=capsys)
    assert tracker.last().query == {"limit": ["1000"]}
    assert "DONE1" in out and "-- 3 messages" in out


def test_show_prints_envelope_headers_jobs_and_timeline(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/messages/4FJ2K8Q1ZB", DETAIL)
    status, out, _ = queue(tracker, "show", "4FJ2K8Q1ZB", capsys=capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[:12] == [
        "*** ENVELOPE ***",
        "queue_id: 4FJ2K8Q1ZB",
        "message_id: <invoice-42@shop.example>",
        "arrival: 2026-12-05 10:02:11",
        "size: 18342",
        "sender: billing@shop.example",
        "recipient: bob@customer.example",
        "recipient: carol@other.example",
        "client: 10.1.2.3 (helo shop-7f9c)",
        "authenticated_user: -",
        "trust: relay-network",
        "listener: smtp",
    ]
    assert lines[12:16] == [
        "*** HEADERS ***",
        "From: Billing <billing@shop.example>",
        "Subject: Invoice 42",
        "\tcontinued",
    ]
    assert lines[16] == "*** JOBS ***"
    assert lines[18].split() == [
        "4FJ2K8Q1ZB.1",
        "customer.example",
        "retry.5m",
        "2",
        "2026-12-05",
        "10:12:11",
        "bob@customer.example",
    ]
    timeline = lines[lines.index("*** TIMELINE ***") + 1 :]
    assert timeline[0].split()[:3] == ["TIME", "SERVICE", "EVENT"]
    assert timeline[1].split() == [
        "2026-12-05",
        "10:02:11",
        "smtp-ingress",
        "received",
        "-",
        "-",
        "client=10.1.2.3",
        "size=18342",
    ]
    assert timeline[2].endswith("recipients=bob@customer.example (451 4.7.1 try later)")
    assert timeline[3].endswith('jobs=4FJ2K8Q1ZB.1[bob@customer.example],{"unknown": ["shape"]}')


def test_show_of_an_unknown_queue_id_exits_1(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/messages/NOPE", {"detail": "no such message"}, status=404)
    status, out, err = queue(tracker, "show", "NOPE", capsys=capsys)
    assert (status, out) == (1, "")
    assert err == "kubemta-admin queue show: not found (404): no such message\n"


@pytest.mark.parametrize("queue_id", ["", ".", ".."])
def test_show_refuses_a_queue_id_that_would_change_the_path(tracker, capsys, queue_id: str) -> None:
    status, _, err = queue(tracker, "show", queue_id, capsys=capsys)
    assert status == 2 and "invalid queue id" in err
    assert tracker.requests == []


def test_show_quotes_the_queue_id_as_one_path_segment(tracker, capsys) -> None:
    status, _, _ = queue(tracker, "show", "a/b?c#d", capsys=capsys)
    assert status == 1
    assert tracker.last().path == "/v1/messages/a%2Fb%3Fc%23d"


def test_find_sends_the_criteria_and_times_in_rfc3339(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/messages", {"messages": [MESSAGE]})
    status, out, _ = queue(
        tracker,
        "find",
        "--recipient",
        "bob@customer.example",
        "--since",
        "2026-12-05 10:00",
        "--until",
        "2026-12-05T12:00:00+02:00",
        "--limit",
        "5",
        capsys=capsys,
    )
    assert status == 0 and "4FJ2K8Q1ZB" in out
    assert tracker.last().query == {
        "recipient": ["bob@customer.example"],
        "since": ["2026-12-05T10:00:00Z"],
        "until": ["2026-12-05T10:00:00Z"],
        "limit": ["5"],
    }
    status, _, _ = queue(tracker, "find", "--message-id", "<invoice-42@shop.example>", "--since", "2h", capsys=capsys)
    assert status == 0
    assert tracker.last().query["message_id"] == ["<invoice-42@shop.example>"]
    assert tracker.last().query["since"][0].endswith("Z")


def test_find_without_a_match_exits_1(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/messages", {"messages": []})
    status, out, _ = queue(tracker, "find", "--sender", "nobody@x.example", capsys=capsys)
    assert (status, out) == (1, "no messages\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["find"], "find needs --queue-id"),
        (["find", "--since", "yesterday"], "--since: not a time or a duration: yesterday"),
        (["find", "--sender", "a@b", "--limit", "0"], "--limit must be between 1 and 1000"),
        (["list", "--limit", "-1"], "--limit must be between 1 and 1000"),
    ],
)
def test_bad_criteria_are_usage_errors(tracker, capsys, args: list[str], message: str) -> None:
    status, _, err = queue(tracker, *args, capsys=capsys)
    assert status == 2 and message in err and len(err.splitlines()) == 1
    assert tracker.requests == []


@pytest.mark.parametrize(
    ("args", "path", "body", "answer", "line"),
    [
        (["flush"], "/v1/queue/flush", {}, {"flushed": 7}, "flushed 7 deferred jobs"),
        (
            ["flush", "--domain", "customer.example"],
            "/v1/queue/flush",
            {"domain": "customer.example"},
            {"flushed": 3},
            "flushed 3 deferred jobs to customer.example",
        ),
        (
            ["hold", "--sender", "spam@x.example"],
            "/v1/queue/hold",
            {"sender": "spam@x.example"},
            {"decision_id": "d-1", "held": 4},
            "held 4 (decision d-1; sender=spam@x.example)",
        ),
        (
            ["release", "--all"],
            "/v1/queue/release",
            {"all": True},
            {"decision_id": "d-2", "released": 9},
            "released 9 (decision d-2; all=yes)",
        ),
        (
            ["release", "--queue-id", "4FJ2K8Q1ZB"],
            "/v1/queue/release",
            {"queue_id": "4FJ2K8Q1ZB"},
            {"decision_id": "d-3", "released": 1},
            "released 1 (decision d-3; queue_id=4FJ2K8Q1ZB)",
        ),
        (
            ["delete", "--domain", "customer.example"],
            "/v1/queue/delete",
            {"domain": "customer.example", "dsn": False},
            {"decision_id": "d-4", "deleted": 2},
            "deleted 2 (decision d-4; domain=customer.example)",
        ),
        (
            ["delete", "--queue-id", "Q1", "--dsn"],
            "/v1/queue/delete",
            {"queue_id": "Q1", "dsn": True},
            {"decision_id": "d-5", "deleted": 1},
            "deleted 1 (decision d-5; queue_id=Q1)",
        ),
    ],
)
def test_admin_verbs_post_their_selector(tracker, capsys, args, path, body, answer, line) -> None:
    tracker.answer("POST", path, answer)
    status, out, _ = queue(tracker, *args, capsys=capsys)
    assert (status, out) == (0, line + "\n")
    assert tracker.last().method == "POST" and tracker.last().json() == body


@pytest.mark.parametrize(
    "args",
    [["hold"], ["delete"], ["hold", "--all"], ["hold", "--sender", "a@b", "--domain", "b"], ["delete", "--all"]],
)
def test_admin_verbs_need_exactly_one_selector(tracker, capsys, args: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["queue", *args, "--url", tracker.url])
    assert exited.value.code == 2
    assert tracker.requests == []


def test_held_lists_the_held_jobs(tracker, capsys) -> None:
    tracker.answer(
        "GET",
        "/v1/queue/held",
        {
            "held": [
                {
                    "queue_id": "Q1",
                    "job_id": "Q1.1",
                    "domain": "customer.example",
                    "sender": "a@shop.example",
                    "recipients": ["bob@customer.example"],
                    "reason": "admin",
                    "held_at": "2026-12-05T10:05:00Z",
                }
            ]
        },
    )
    status, out, _ = queue(tracker, "held", capsys=capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[1].split() == ["Q1", "Q1.1", "customer.example", "admin", "2026-12-05", "10:05:00", "a@shop.example"]
    assert lines[2].strip() == "bob@customer.example" and lines[3] == "-- 1 held job"
    tracker.answer("GET", "/v1/queue/held", {"held": []})
    assert queue(tracker, "held", capsys=capsys)[:2] == (0, "no held messages\n")


def test_json_prints_the_answer_escaped(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/queue/summary", {**SUMMARY, "note": "\x1b[2J\u202e"})
    status, out, _ = queue(tracker, "summary", "--json", capsys=capsys)
    assert status == 0
    assert json.loads(out) == {**SUMMARY, "note": "\x1b[2J\u202e"}
    assert out.isascii() and "\x1b" not in out


@pytest.mark.parametrize(
    ("status_code", "exit_status", "message"),
    [
        (401, 4, "tracker refused the token (401): bad token"),
        (403, 4, "an admin token is needed (403): bad token"),
        (400, 2, "tracker refused the request (400): bad token"),
        (500, 3, "answered 500: bad token"),
        (503, 3, "answered 503: bad token"),
        (302, 3, "answered 302: bad token"),
    ],
)
def test_http_errors_map_to_exit_statuses(tracker, capsys, status_code, exit_status, message) -> None:
    tracker.answer(
        "POST",
        "/v1/queue/flush",
        {"detail": "bad token"},
        status=status_code,
        headers={"Location": "http://127.0.0.9/steal", "Content-Type": "application/json"},
    )
    status, out, err = queue(tracker, "flush", capsys=capsys)
    assert (status, out) == (exit_status, "")
    assert message in err and len(err.splitlines()) == 1
    assert len(tracker.requests) == 1  # no redirect followed


def test_an_unreachable_tracker_exits_3(capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        status = run(["queue", "summary", "--url", f"http://user:pw@127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert (status, out) == (3, "")
    assert err == f"kubemta-admin queue summary: tracker at http://127.0.0.1:{port} unreachable: ConnectError\n"


def test_a_slow_tracker_exits_3(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/queue/summary", SUMMARY, delay=1.0)
    status, _, err = queue(tracker, "summary", "--timeout", "0.2", capsys=capsys)
    assert status == 3 and "did not answer within 0.2s" in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>oops</html>", "with a body that is not JSON"),
        (b"\xff\xfe{", "with a body that is not JSON"),
        (b"[1, 2]", "with JSON that is not an object"),
        (b"[" * 100_000, "with a body that is not JSON"),
    ],
)
def test_nonsense_answers_exit_3(tracker, capsys, body: bytes, message: str) -> None:
    tracker.answer("GET", "/v1/queue/summary", body)
    status, _, err = queue(tracker, "summary", capsys=capsys)
    assert status == 3 and message in err


def test_a_huge_answer_is_not_read_to_its_end(tracker, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_http, "MAX_BODY", 64 * 1024)
    tracker.answer("GET", "/v1/queue/summary", b" " * 16384, chunks=1000)  # 16 MB, chunked: no Content-Length
    status, _, err = queue(tracker, "summary", capsys=capsys)
    assert status == 3 and "larger than 65536 bytes" in err
    tracker.answer("GET", "/v1/queue/held", b" " * (128 * 1024))  # declared by its Content-Length
    status, _, err = queue(tracker, "held", capsys=capsys)
    assert status == 3 and "larger than 65536 bytes" in err


def test_control_characters_and_wrong_types_are_escaped(tracker, capsys) -> None:
    evil = "evil\x1b[31m@x.example\r\nFAKE LINE\u202e\x00"
    tracker.answer(
        "GET",
        "/v1/messages",
        {
            "messages": [
                {**MESSAGE, "sender": evil, "recipients": [evil, 42, None], "size": "big", "received_at": "\x1b[2J"},
                "not an object",
                {"queue_id": {"nested": [1]}},
            ]
        },
    )
    status, out, _ = queue(tracker, "list", "--all", capsys=capsys)
    assert status == 0
    assert "evil\\x1b[31m@x.example\\r\\nFAKE LINE\\u202e\\x00" in out
    assert all(char.isprintable() for line in out.splitlines() for char in line)
    tracker.answer(
        "GET",
        "/v1/messages/Q",
        {
            **DETAIL,
            "headers": "X-Evil: \x1b]0;title\x07\r\n",
            "jobs": "x",
            "timeline": [{"details": {"k\x1b": "\x9b"}}],
        },
    )
    status, out, _ = queue(tracker, "show", "Q", capsys=capsys)
    assert status == 0 and "X-Evil: \\x1b]0;title\\x07" in out and "k\\x1b=\\x9b" in out
    assert all(char.isprintable() or char == "\t" for line in out.splitlines() for char in line)
    tracker.answer("GET", "/v1/queue/summary", {"stages": [], "retry": "x", "domains": {}, "broker": None})
    assert queue(tracker, "summary", capsys=capsys)[0] == 0


def test_an_error_detail_is_escaped_and_cut_short(tracker, capsys) -> None:
    tracker.answer("GET", "/v1/queue/held", {"detail": "\x1b[31m" + "x" * 5000}, status=500)
    status, _, err = queue(tracker, "held", capsys=capsys)
    assert status == 3
    assert "\\x1b[31m" in err and "\x1b" not in err and len(err) < 400 and err.count("\n") == 1


def test_url_and_token_come_from_the_environment(tracker, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMTA_TRACKER_URL", tracker.url)
    monkeypatch.setenv("KUBEMTA_ADMIN_TOKEN", "read-token-from-env")
    tracker.answer("GET", "/v1/queue/held", {"held": []})
    assert run(["queue", "held"]) == 0
    assert tracker.last().headers["Authorization"] == "Bearer read-token-from-env"


@pytest.mark.parametrize("token", ["", "with space", "line\nbreak", "n\u00f6n-ascii"])
def test_a_missing_or_malformed_token_is_a_usage_error_that_does_not_echo_it(tracker, capsys, token: str) -> None:
    status = run(["queue", "held", "--url", tracker.url, "--token", token])
    _, err = capsys.readouterr()
    assert status == 2 and len(err.splitlines()) == 1
    assert not token or token not in err
    assert tracker.requests == []


@pytest.mark.parametrize(
    "url", ["ftp://x", "127.0.0.1:8025", "http://", "http://\x1b[31m", "http://h:99999", "http://[::1"]
)
def test_a_bad_url_is_a_usage_error(capsys, url: str) -> None:
    assert run(["queue", "held", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "--url must be" in err and "\x1b" not in err


def test_human_times_and_ages() -> None:
    assert human_time("2026-12-05T12:02:11.5+02:00") == "2026-12-05 10:02:11"
    assert human_time("garbage\n") == "garbage\\n"
    assert [human_age(v) for v in (0, 59, 192, 3600, 7500, 86400 * 2 + 3600 * 4, -1, "x", True, None)] == [
        "0s",
        "59s",
        "3m12s",
        "1h00m",
        "2h05m",
        "2d04h",
        "-",
        "-",
        "-",
        "-",
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    out = printable(text)
    assert all(char.isprintable() for char in out)
    assert "\n" not in out


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "stages",
                "retry",
                "domains",
                "broker",
                "messages",
                "held",
                "queue_id",
                "sender",
                "recipients",
                "headers",
                "jobs",
                "timeline",
                "size",
            ]
        ),
        json_values,
    )
)
def test_renderers_take_any_json_object(answer: dict[str, object]) -> None:
    from kubemta_admin import queue_render

    for render in (queue_render.summary, queue_render.messages, queue_render.held, queue_render.message):
        for line in render(answer):
            assert all(char.isprintable() or char == "\t" for char in line)
    assert cell(answer) is not None


def test_queue_help_names_every_verb(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        queue_cli.main(["queue", "--help"])
    assert exited.value.code == 0
    assert "{summary,list,show,find,flush,hold,release,delete,held}" in capsys.readouterr().out


def test_an_interrupt_is_one_line_and_a_closed_pipe_is_quiet(tracker, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(api, args):
        raise KeyboardInterrupt

    monkeypatch.setitem(queue_cli.VERBS, "held", interrupted)
    status, out, err = queue(tracker, "held", capsys=capsys)
    assert (status, out, err) == (130, "", "kubemta-admin queue held: interrupted\n")
    monkeypatch.undo()

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError

        def flush(self) -> None:
            raise BrokenPipeError

        def fileno(self) -> int:
            raise ValueError("no file")

    tracker.answer("GET", "/v1/queue/held", {"held": []})
    monkeypatch.setenv("KUBEMTA_ADMIN_TOKEN", TOKEN)
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    assert run(["queue", "held", "--url", tracker.url]) == 0
