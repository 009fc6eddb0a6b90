"""Event ids are 24 hex digits from the kernel's random source, drawn 256 at a time, never handed out twice."""

import os
import re
import threading
import warnings

import pytest

from kubemta_common.events import event_ids
from kubemta_common.events.event_ids import IDS_PER_DRAW, new_event_id


def test_an_id_is_24_lower_case_hex_digits() -> None:
    assert all(re.fullmatch(r"[0-9a-f]{24}", new_event_id()) for _ in range(IDS_PER_DRAW + 1))


def test_ids_come_from_os_urandom_a_draw_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    event_ids._drawn.clear()
    draws: list[int] = []
    real_urandom = os.urandom

    def counting_urandom(size: int) -> bytes:
        draws.append(size)
        return real_urandom(size)

    monkeypatch.setattr(os, "urandom", counting_urandom)
    ids = [new_event_id() for _ in range(3 * IDS_PER_DRAW + 1)]
    assert draws == [12 * IDS_PER_DRAW] * 4  # not one system call per id
    assert len(set(ids)) == len(ids)


def test_ids_are_the_drawn_bytes_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    event_ids._drawn.clear()
    monkeypatch.setattr(os, "urandom", lambda size: bytes(range(256)) * (size // 256))
    assert [new_event_id() for _ in range(2)] == [bytes(range(12)).hex(), bytes(range(12, 24)).hex()]
    event_ids._drawn.clear()  # the next test draws real ids again


def test_threads_never_get_the_same_id() -> None:
    seen: list[list[str]] = [[], [], [], []]

    def draw(into: list[str]) -> None:
        into.extend(new_event_id() for _ in range(5 * IDS_PER_DRAW))

    threads = [threading.Thread(target=draw, args=(ids,)) for ids in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    every = [each for ids in seen for each in ids]
    assert len(every) == 4 * 5 * IDS_PER_DRAW and len(set(every)) == len(every)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    new_event_id()  # the parent now holds 255 drawn ids
    left_in_parent = list(event_ids._drawn)
    reader, writer = os.pipe()
    with warnings.catch_warnings():  # other tests in this worker may have left threads: the child only writes
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child's report comes back through the pipe
        try:
            os.write(writer, " ".join(new_event_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        from_child = pipe.read().split()
    os.waitpid(child, 0)
    assert len(from_child) == 3 and not set(from_child) & set(left_in_parent)
