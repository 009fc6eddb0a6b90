"""The suppression list in the index and its API without a broker: changes applied in stream order (add, remove,
re-add, latest wins, a change seen twice applied once), expiry and pruning, a rebuild from an empty file giving the
same list; the routes' authentication, validation of hostile addresses and reasons, paging and the check."""

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubemta.v1 import events_pb2
from kubemta_common.events.suppression_log import ADMIN, BOUNCE, change, normalize_address
from kubemta_tracker.index import Index

DAY = 86400.0


def _add(address: str, *, ttl: float = 30 * DAY, source: str = BOUNCE, reason: str = "invalid_recipient", **kw: Any):
    return change(address, suppressed=True, source=source, actor="queue-manager", reason=reason, ttl=ttl, **kw)


def _remove(address: str, **kw: Any) -> events_pb2.SuppressionChange:
    return change(address, suppressed=False, source=ADMIN, actor="alice", **kw)


class Stream:
    """What a `suppressions` stream holds: records with offsets, fed to an index in batches."""

    def __init__(self) -> None:
        self.records: list[tuple[int, bytes]] = []

    def append(self, *changes: events_pb2.SuppressionChange) -> list[tuple[int, bytes]]:
        batch = [(len(self.records) + i, record.SerializeToString()) for i, record in enumerate(changes)]
        self.records.extend(batch)
        return batch


async def _listed(index: Index, now: float | None = None) -> list[tuple[str, str, float]]:
    rows = await index.read(
        index.reader.suppressions, domain=None, after=None, limit=1000, now=time.time() if now is None else now
    )
    return [(row["address"], row["source"], row["expires"]) for row in rows]


async def test_add_remove_readd_and_latest_wins(index: Index) -> None:
    stream = Stream()
    now = time.time()
    await index.index_suppressions(stream.append(_add("Bob@Example.ORG", now=now), _add("carol@example.org", now=now)))
    assert [address for address, *_ in await _listed(index)] == ["bob@example.org", "carol@example.org"]

    await index.index_suppressions(stream.append(_remove("bob@example.org")))
    assert [address for address, *_ in await _listed(index)] == ["carol@example.org"]
    assert await index.read(index.reader.suppression, "bob@example.org", time.time()) is None

    readd = _add("bob@example.org", source=ADMIN, reason="asked to", ttl=DAY, now=now + 5)
    await index.index_suppressions(stream.append(readd))
    row = await index.read(index.reader.suppression, "bob@example.org", time.time())
    assert row is not None and row["source"] == ADMIN and row["reason"] == "asked to"
    assert row["expires"] == pytest.approx(now + 5 + DAY)

    # in one batch, the later change wins (stream order, not the writers' clocks: this add says it is older)
    await index.index_suppressions(stream.append(_remove("carol@example.org"), _add("carol@example.org", now=now - 60)))
    assert await index.read(index.reader.suppression, "carol@example.org", time.time()) is not None


async def test_a_change_seen_twice_is_applied_once(index: Index) -> None:
    stream = Stream()
    first = _add("dave@example.org")
    await index.index_suppressions(stream.append(first, _remove("dave@example.org")))
    await index.index_suppressions(stream.append(first))  # republished after a lost confirm
    assert await _listed(index) == []


async def test_expired_entries_do_not_count_and_are_pruned(index: Index, tmp_path: Path) -> None:
    stream = Stream()
    past = time.time() - 40 * DAY
    await index.index_suppressions(stream.append(_add("old@example.org", now=past), _add("new@example.org", ttl=DAY)))
    assert [address for address, *_ in await _listed(index)] == ["new@example.org"]
    live = await index.read(index.reader.suppressed, ["old@example.org", "new@example.org"], time.time())
    assert [row["address"] for row in live] == ["new@example.org"]
    assert await _listed(index, now=time.time() + 2 * DAY) == []
    assert await index.prune_suppressions(time.time(), 30 * DAY) == 1
    with sqlite3.connect(index.path) as db:
        assert db.execute("SELECT address FROM suppressions").fetchall() == [("new@example.org",)]
        assert db.execute("SELECT count(*) FROM suppression_changes").fetchone()[0] == 1  # the old change id too


async def test_a_rebuild_from_an_empty_file_gives_the_same_list(index: Index, tmp_path: Path) -> None:
    stream = Stream()
    changes = [
        _add("a@example.org"),
        _add("b@example.org"),
        _remove("a@example.org"),
        _add("c@example.net", source=ADMIN, reason="complaint"),
        _add("a@example.org", ttl=DAY),
        _remove("b@example.org"),
        _add("b@example.org", ttl=2 * DAY),
    ]
    for record in changes:  # one batch per change, as a live replica reads them
        await index.index_suppressions(stream.append(record))
    rebuilt = Index(tmp_path / "rebuilt.sqlite3")
    await rebuilt.open()
    try:
        await rebuilt.index_suppressions(stream.records)  # the whole stream in one batch
        assert await _listed(rebuilt) == await _listed(index)
        assert [address for address, *_ in await _listed(index)] == ["a@example.org", "b@example.org", "c@example.net"]
    finally:
        await rebuilt.close()


async def test_records_that_are_no_change_are_skipped(index: Index) -> None:
    await index.index_suppressions(
        [(0, b"\xff\xfe not protobuf"), (1, events_pb2.SuppressionChange().SerializeToString())]
    )
    await index.index_suppressions([(2, _add("e@example.org").SerializeToString())])
    assert [address for address, *_ in await _listed(index)] == ["e@example.org"]


# -- the API without a broker ------------------------------------------------------------------------------------

READ = {"Authorization": "Bearer read-token-0123456789abcdef"}
ADMIN_AUTH = {"Authorization": "Bearer admin-token-0123456789abcdef"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/suppressions", None),
        ("GET", "/v1/suppressions/bob@example.org", None),
        ("POST", "/v1/suppressions/check", {"addresses": ["bob@example.org"]}),
        ("POST", "/v1/suppressions", {"address": "bob@example.org"}),
        ("DELETE", "/v1/suppressions/bob@example.org", None),
    ],
)
async def test_every_route_needs_a_token_and_writes_an_admin_one(
    make_client: Callable[..., httpx.AsyncClient], method: str, path: str, body: Any
) -> None:
    client = make_client()
    anonymous = await client.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    as_reader = await client.request(method, path, json=body, headers=READ)
    if method == "GET" or path.endswith("/check"):
        assert as_reader.status_code in (200, 404)
    else:
        assert as_reader.status_code == 403


async def test_paging_by_address_and_domain(make_client: Callable[..., httpx.AsyncClient], index: Index) -> None:
    stream = Stream()
    addresses = [f"user{n:02d}@example.org" for n in range(7)] + ["x@other.example"]
    await index.index_suppressions(stream.append(*(_add(address) for address in addresses)))
    client = make_client()
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "3", "domain": "EXAMPLE.ORG", **({"after": after} if after else {})}
        page = (await client.get("/v1/suppressions", params=params, headers=READ)).json()
        seen += [entry["address"] for entry in page["suppressions"]]
        after = page["next"]
        if after is None:
            break
    assert seen == addresses[:7]
    bad = await client.get("/v1/suppressions", params={"limit": "1001"}, headers=READ)
    assert bad.status_code == 422


async def test_show_and_check_answer_live_entries(make_client: Callable[..., httpx.AsyncClient], index: Index) -> None:
    stream = Stream()
    await index.index_suppressions(stream.append(_add("bob@example.org", queue_id="Q1", diagnostic="550 5.1.1 no")))
    client = make_client()
    shown = await client.get("/v1/suppressions/BOB@example.org", headers=READ)
    assert shown.status_code == 200
    assert shown.json()["queue_id"] == "Q1" and shown.json()["source"] == "bounce"
    assert shown.json()["expires"].endswith("Z")
    assert (await client.get("/v1/suppressions/carol@example.org", headers=READ)).status_code == 404
    checked = await client.post(
        "/v1/suppressions/check",
        json={"addresses": ["Bob@Example.org", "carol@example.org", "not an address", "\r\n@x"]},
        headers=READ,
    )
    assert checked.status_code == 200
    assert [entry["address"] for entry in checked.json()["suppressed"]] == ["bob@example.org"]
    too_many = await client.post("/v1/suppressions/check", json={"addresses": ["a@b.c"] * 1001}, headers=READ)
    assert too_many.status_code == 422


async def test_writes_without_a_stream_are_503_and_an_unknown_remove_404(
    make_client: Callable[..., httpx.AsyncClient],
) -> None:
    client = make_client()
    added = await client.post("/v1/suppressions", json={"address": "bob@example.org"}, headers=ADMIN_AUTH)
    assert added.status_code == 503
    assert (await client.delete("/v1/suppressions/bob@example.org", headers=ADMIN_AUTH)).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"address": "bob@example.org\r\nRCPT TO:<x@y>"},
        {"address": "<bob@example.org>"},
        {"address": "a" * 65 + "@example.org"},
        {"address": "bob@" + "a" * 250 + ".org"},
        {"address": "no-at-sign"},
        {"address": "bob@example.org", "reason": "x" * 201},
        {"address": "bob@example.org", "reason": "line\nbreak"},
        {"address": "bob@example.org", "reason": "\x1b[31mred"},
        {"address": "bob@example.org", "ttl": 31 * DAY},
        {"address": "bob@example.org", "ttl": 0},
        {"address": "bob@example.org", "extra": 1},
    ],
)
async def test_hostile_adds_are_422_without_echo(make_client: Callable[..., httpx.AsyncClient], body: Any) -> None:
    answer = await (make_client()).post("/v1/suppressions", json=body, headers=ADMIN_AUTH)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\r" not in detail and "\x1b" not in detail and "RCPT" not in detail


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.one_of(st.text(max_size=300), st.from_regex(r"[^@]{1,70}@[^@]{1,260}", fullmatch=True)))
def test_normalize_address_accepts_only_one_line_bounded_addresses(text: str) -> None:
    try:
        address = normalize_address(text)
    except ValueError:
        return
    assert address == text.lower() and "@" in address
    assert len(address.encode("utf-8", "surrogatepass")) <= 254
    assert address.isprintable() and not any(char.isspace() or char in "<>" for char in address)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(address=st.text(max_size=300), reason=st.text(max_size=250))
async def test_any_address_and_reason_is_a_clean_answer(
    make_client: Callable[..., httpx.AsyncClient], address: str, reason: str
) -> None:
    client = make_client()
    body = json.dumps({"address": address, "reason": reason})
    answer = await client.post(
        "/v1/suppressions", content=body, headers={**ADMIN_AUTH, "Content-Type": "application/json"}
    )
    assert answer.status_code in (422, 503)  # refused, or valid and then no stream; never a 500
    if answer.status_code == 503:
        normalize_address(address)  # accepted only what the writers accept
        assert reason.isprintable() and len(reason) <= 200
    checked = await client.post("/v1/suppressions/check", json={"addresses": [address[:1024]]}, headers=READ)
    assert checked.status_code == 200 and checked.json() == {"suppressed": []}
