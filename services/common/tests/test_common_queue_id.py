"""Queue ids: 16 characters of a vowel-free base-52 alphabet, the milliseconds of their making in the
high 48 bits and random bits below, so that ids sort by time and ids of one millisecond still differ."""

import collections
import os
from types import SimpleNamespace

import pytest

from kubemta_common import queue_id
from kubemta_common.queue_id import new_queue_id

ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
RANDOM_BITS = 48


def at(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make the ids as if the clock said `seconds`."""
    monkeypatch.setattr(queue_id, "time", SimpleNamespace(time=lambda: seconds))


def decoded(identifier: str) -> tuple[int, int]:
    """(milliseconds, random bits) of a queue id."""
    value = 0
    for char in identifier:
        value = value * len(ALPHABET) + ALPHABET.index(char)
    return value >> RANDOM_BITS, value & ((1 << RANDOM_BITS) - 1)


def test_the_alphabet_sorts_as_text_and_has_no_vowels() -> None:
    assert sorted(ALPHABET) == list(ALPHABET)
    assert not set("AEIOUaeiou") & set(ALPHABET)


def test_an_id_is_16_characters_of_the_alphabet(monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, 1_700_000_000.123)
    for _ in range(200):
        identifier = new_queue_id()
        assert len(identifier) == 16
        assert set(identifier) <= set(ALPHABET)


def test_an_id_carries_the_milliseconds_of_its_making(monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, 1_700_000_000.25)
    assert {decoded(new_queue_id())[0] for _ in range(200)} == {1_700_000_000_250}


def test_ids_of_one_millisecond_differ_in_their_random_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, 1_700_000_000.5)
    ids = [new_queue_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    randoms = [decoded(identifier)[1] for identifier in ids]
    # all 48 random bits are used: some ids have the top one set, some the bottom one
    assert any(random >> (RANDOM_BITS - 1) for random in randoms)
    assert any(random & 1 for random in randoms)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (1_700_000_000.25, 1_700_000_000.5),  # a quarter second apart
        (1_700_000_000.5, 1_700_000_001.5),  # a second apart
        (0.0, 1_700_000_000.0),  # the epoch: leading zeros
        (1_700_000_000.0, 9_999_999_999.0),  # the year 2286
    ],
)
def test_ids_of_later_times_sort_after_earlier_ones(
    monkeypatch: pytest.MonkeyPatch, earlier: float, later: float
) -> None:
    at(monkeypatch, earlier)
    first = [new_queue_id() for _ in range(50)]
    at(monkeypatch, later)
    second = [new_queue_id() for _ in range(50)]
    assert max(first) < min(second)


def test_ids_one_millisecond_apart_sort_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    at(monkeypatch, 1_700_000_000.0)
    first = [new_queue_id() for _ in range(50)]
    at(monkeypatch, 1_700_000_000.0 + 0.0015)
    second = [new_queue_id() for _ in range(50)]
    assert {decoded(identifier)[0] for identifier in second} == {1_700_000_000_001}
    assert max(first) < min(second)


def reference_id(value: int) -> str:
    """The id of a 96-bit value, one base-52 digit at a time (how ids were first written)."""
    chars = []
    for _ in range(16):
        value, digit = divmod(value, len(ALPHABET))
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


@pytest.mark.parametrize("seconds", [0.0, 1_700_000_000.123, 9_999_999_999.999, 20_000_000_000.0])
def test_the_pairwise_digits_match_one_digit_at_a_time(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    at(monkeypatch, seconds)
    for random in (0, 1, 2**47, 2**48 - 1, 0x123456789ABC):
        monkeypatch.setattr(queue_id, "_random48", lambda random=random: random)
        assert new_queue_id() == reference_id((int(seconds * 1000) << RANDOM_BITS) | random)


def test_random_bits_come_from_urandom_and_are_used_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counting_urandom(size: int) -> bytes:
        calls.append(size)
        return bytes(index % 256 for index in range(size))

    monkeypatch.setattr(queue_id, "_pool", collections.deque())
    monkeypatch.setattr(os, "urandom", counting_urandom)
    values = [queue_id._random48() for _ in range(2 * queue_id._POOL_IDS)]
    assert calls == [6 * queue_id._POOL_IDS] * 2  # one system call per pool of ids
    assert values[:2] == [int.from_bytes(bytes(range(0, 6))), int.from_bytes(bytes(range(6, 12)))]


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    new_queue_id()  # the pool is filled
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the size of its pool
        os.write(writer, str(len(queue_id._pool)).encode())
        os._exit(0)
    os.close(writer)
    try:
        assert os.read(reader, 16) == b"0"
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
