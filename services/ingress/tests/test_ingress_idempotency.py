"""Idempotency-Key on the ingress (kubemta_ingress.idempotency) against a fake tracker: the header's syntax
(hostile values included), the key hash and request fingerprint, and what `Idempotency.begin` answers the API
route in each case (first request, retry in flight, other request, replay, release, stale claim, no tracker)."""

import re
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubemta_common.events.tracker_client import IdempotencyAnswer, TrackerUnavailable
from kubemta_ingress.idempotency import (
    MAX_KEY,
    MAX_WINDOW,
    Conflict,
    Idempotency,
    IdempotencyKey,
    InvalidIdempotencyKey,
    Proceed,
    Replay,
    Unavailable,
    key_hash,
    request_fingerprint,
)
from tests.harness.fake_idempotency import FakeIdempotencyTracker

HEX64 = re.compile(r"[0-9a-f]{64}")
CLAIMANT = re.compile(r"[A-Za-z0-9._~-]{1,64}")
"""The tracker's syntax of a claimant (idempotency_api.CLAIMANT)."""
PRINTABLE = "".join(chr(code) for code in range(0x20, 0x7F))


@dataclass(frozen=True)
class Caller:
    name: str


ALICE = Caller("apikey:alice")
BOB = Caller("apikey:bob")
KEY = IdempotencyKey("order-4711")
FP = request_fingerprint("POST", "/v1/messages", "application/json", b'{"to": ["bob@example.org"]}')
OTHER_FP = request_fingerprint("POST", "/v1/messages", "application/json", b'{"to": ["eve@example.org"]}')


def _sf(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the header ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ('"with space and \\"quotes\\" and \\\\"', 'with space and "quotes" and \\'),
        ('  "padded"\t', "padded"),
        ("bare-token_01:~", "bare-token_01:~"),
        ('"' + "k" * MAX_KEY + '"', "k" * MAX_KEY),
        ("k" * MAX_KEY, "k" * MAX_KEY),
    ],
)
def test_keys_are_sf_strings_or_bare_printable_ascii(header: str, value: str) -> None:
    assert IdempotencyKey.parse(header) == IdempotencyKey(value)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "empty"),
        ('""', "empty"),
        ("   ", "empty"),
        ('"' + "k" * (MAX_KEY + 1) + '"', "longer than 255"),
        ("k" * (MAX_KEY + 1), "longer than 255"),
        ('"unterminated', "no closing quote"),
        ('"a"b', "after its closing quote"),
        ('"a";param=1', "after its closing quote"),
        ('"a\\b"', "backslash"),
        ('"a\\', "backslash"),
        ('"caf\u00e9"', "not printable ASCII"),
        ('"tab\there"', "not printable ASCII"),
        ('"nul\x00"', "not printable ASCII"),
        ("two words", "not a structured-field string"),
        ("caf\u00e9", "not a structured-field string"),
        ("back\\slash", "not a structured-field string"),
        ("a\r\nX-Injected: 1", "not a structured-field string"),
    ],
)
def test_bad_keys_are_refused_with_a_reason(header: str, reason: str) -> None:
    with pytest.raises(InvalidIdempotencyKey, match=re.escape(reason)):
        IdempotencyKey.parse(header)


@given(st.text(alphabet=PRINTABLE, min_size=1, max_size=MAX_KEY))
def test_every_printable_key_round_trips_as_an_sf_string(value: str) -> None:
    assert IdempotencyKey.parse(_sf(value)).value == value


@given(st.text(max_size=400))
def test_any_header_gives_a_valid_key_or_a_reason_without_the_value(header: str) -> None:
    try:
        key = IdempotencyKey.parse(header)
    except InvalidIdempotencyKey as exc:
        if len(header.strip()) >= 8:
            assert header.strip() not in str(exc)
        return
    assert 1 <= len(key.value) <= MAX_KEY and all(" " <= char <= "~" for char in key.value)


# -- hashes --------------------------------------------------------------------------------------------------------


def test_the_key_hash_is_per_principal_and_length_prefixed() -> None:
    hashed = key_hash(ALICE.name, KEY)
    assert HEX64.fullmatch(hashed)
    assert hashed == key_hash(ALICE.name, KEY.value)
    assert hashed != key_hash(BOB.name, KEY)
    assert key_hash("a", "bc") != key_hash("ab", "c")
    assert hashed != KEY.value and KEY.value not in hashed


def test_the_fingerprint_covers_method_path_content_type_and_body() -> None:
    base = ("POST", "/v1/messages", "application/json", b"{}")
    fingerprints = {
        request_fingerprint(*base),
        request_fingerprint("PUT", *base[1:]),
        request_fingerprint(base[0], "/v1/messages/x", *base[2:]),
        request_fingerprint(*base[:2], "text/plain", base[3]),
        request_fingerprint(*base[:3], b"{ }"),
        request_fingerprint("POST", "/v1/messagesapplication/json", "", b"{}"),
    }
    assert len(fingerprints) == 6 and all(HEX64.fullmatch(fingerprint) for fingerprint in fingerprints)
    assert request_fingerprint("post", *base[1:]) == request_fingerprint(*base)


# -- Idempotency.begin / abandon -----------------------------------------------------------------------------------


async def test_the_first_request_proceeds_with_the_dedup_key_and_a_claimant_the_tracker_takes() -> None:
    tracker = FakeIdempotencyTracker()
    begun = await Idempotency(tracker, 86400).begin(ALICE, KEY, FP)
    assert isinstance(begun, Proceed)
    assert begun.dedup_key == "idem:" + key_hash(ALICE.name, KEY) and begun.key == key_hash(ALICE.name, KEY)
    assert CLAIMANT.fullmatch(begun.claimant)
    assert tracker.calls == [("claim", begun.key, FP, begun.claimant, "86400")]


async def test_a_retry_in_flight_is_409_and_another_request_with_the_key_is_422() -> None:
    idempotency = Idempotency(FakeIdempotencyTracker(), 86400)
    assert isinstance(await idempotency.begin(ALICE, KEY, FP), Proceed)
    retry = await idempotency.begin(ALICE, KEY, FP)
    assert retry == Conflict("in-progress") and retry.status == 409
    other = await idempotency.begin(ALICE, KEY, OTHER_FP)
    assert other == Conflict("other-request") and other.status == 422
    assert isinstance(await idempotency.begin(BOB, KEY, OTHER_FP), Proceed)  # principals never share keys


async def test_after_the_message_was_queued_a_retry_replays_its_queue_id() -> None:
    tracker = FakeIdempotencyTracker()
    idempotency = Idempotency(tracker, 86400)
    first = await idempotency.begin(ALICE, KEY, FP)
    assert isinstance(first, Proceed)
    tracker.queued(first.key, "Q0123456789abcdef")
    assert await idempotency.begin(ALICE, KEY, FP) == Replay("Q0123456789abcdef")
    assert await idempotency.begin(ALICE, KEY, OTHER_FP) == Conflict("other-request")
    tracker.now += 86401  # past the window: the key is new again
    assert isinstance(await idempotency.begin(ALICE, KEY, OTHER_FP), Proceed)


async def test_an_abandoned_claim_lets_the_next_request_proceed() -> None:
    tracker = FakeIdempotencyTracker()
    idempotency = Idempotency(tracker, 86400)
    first = await idempotency.begin(ALICE, KEY, FP)
    assert isinstance(first, Proceed)
    await idempotency.abandon(first)
    assert tracker.calls[-1] == ("release", first.key, first.claimant)
    second = await idempotency.begin(ALICE, KEY, OTHER_FP)
    assert isinstance(second, Proceed) and second.claimant != first.claimant
    asked = len(tracker.calls)
    for nothing_to_release in (Replay("Q1"), Conflict("in-progress"), Unavailable("down")):
        await idempotency.abandon(nothing_to_release)
    assert len(tracker.calls) == asked


async def test_a_stale_claim_is_overtaken() -> None:
    tracker = FakeIdempotencyTracker(claim_ttl=60.0)
    idempotency = Idempotency(tracker, 86400)
    assert isinstance(await idempotency.begin(ALICE, KEY, FP), Proceed)
    tracker.now += 60.0
    assert await idempotency.begin(ALICE, KEY, FP) == Conflict("in-progress")
    tracker.now += 0.5
    assert isinstance(await idempotency.begin(ALICE, KEY, FP), Proceed)


async def test_without_an_answer_nothing_proceeds(caplog: pytest.LogCaptureFixture) -> None:
    tracker = FakeIdempotencyTracker(unavailable=True)
    idempotency = Idempotency(tracker, 86400)
    begun = await idempotency.begin(ALICE, KEY, FP)
    assert isinstance(begun, Unavailable) and begun.status == 503 and begun.retry_after > 0
    assert begun.reason == "the Idempotency-Key cannot be checked right now"
    assert "HTTP 503" in caplog.text  # the detail goes to the log, not to the client
    await idempotency.abandon(Proceed("claimant", "idem:" + "0" * 64))  # logged, not raised
    no_tracker = await Idempotency(None, 86400).begin(ALICE, KEY, FP)
    assert isinstance(no_tracker, Unavailable) and "KUBEMTA_TRACKER_URL" in no_tracker.reason


class _Answering:
    def __init__(self, answer: IdempotencyAnswer) -> None:
        self.answer = answer

    async def claim_idempotency(self, key: str, fingerprint: str, claimant: str, window: float) -> IdempotencyAnswer:
        return self.answer

    async def release_idempotency(self, key: str, claimant: str) -> None:
        raise TrackerUnavailable("never")


@pytest.mark.parametrize("queue_id", ["", "Q 1", "Q1\r\n250 ok", "Q" * 65, "Q/../1", "Q\u00e91"])
async def test_a_done_answer_without_a_clean_queue_id_is_unavailable(queue_id: str) -> None:
    idempotency = Idempotency(_Answering(IdempotencyAnswer("done", queue_id=queue_id, fingerprint=FP)), 86400)
    assert isinstance(await idempotency.begin(ALICE, KEY, FP), Unavailable)


async def test_a_done_answer_with_no_fingerprint_known_replays() -> None:
    idempotency = Idempotency(_Answering(IdempotencyAnswer("done", queue_id="Q1")), 86400)
    assert await idempotency.begin(ALICE, KEY, OTHER_FP) == Replay("Q1")


@pytest.mark.parametrize("window", [0.0, -1.0, MAX_WINDOW + 1])
def test_a_window_the_tracker_refuses_is_refused_at_start(window: float) -> None:
    with pytest.raises(ValueError, match="idempotency window"):
        Idempotency(FakeIdempotencyTracker(), window)


async def test_every_attempt_gets_its_own_claimant() -> None:
    tracker = FakeIdempotencyTracker()
    idempotency = Idempotency(tracker, 86400)
    for number in range(50):
        await idempotency.begin(ALICE, IdempotencyKey(f"k{number}"), FP)
    claimants = [call[3] for call in tracker.calls]
    assert len(set(claimants)) == 50 and all(CLAIMANT.fullmatch(claimant) for claimant in claimants)
