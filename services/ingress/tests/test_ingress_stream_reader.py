"""DATA read in blocks: the end of data is found however the stream is cut, and nothing after it is lost."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemta_ingress.content import unstuff
from kubemta_ingress.data_budget import DataBudget, Reservation
from kubemta_ingress.stream_reader import DATA_BUFFER_LIMIT, DataRefusal, SmtpStreamReader, adopt

NEXT_COMMAND = b"MAIL FROM:<next@example.com>\r\n"


async def read_in_pieces(
    stream: bytes, cuts: list[int], size_limit: int | None = None, reservation: Reservation | None = None
) -> tuple[bytes | DataRefusal, bytes]:
    """Feed `stream` cut at `cuts` while the reader reads; (data, what the next readline gets)."""
    reader = adopt(asyncio.StreamReader(limit=1001))
    task = asyncio.create_task(reader.read_message_data(size_limit, reservation))
    start = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        reader.feed_data(stream[start:cut])
        start = cut
        await asyncio.sleep(0)
    reader.feed_eof()
    data = await asyncio.wait_for(task, 5)
    return data, await reader.read()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b".\r\n", b""),  # an empty message: the end of data right after DATA
        (b"\r\n.\r\n", b"\r\n"),  # one empty line
        (b"Subject: x\r\n\r\nbody\r\n.\r\n", b"Subject: x\r\n\r\nbody\r\n"),
        (b"a\r\n..\r\n.\r\n", b"a\r\n..\r\n"),  # still stuffed: unstuff removes the dot
        (b"a\r\n.b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n"),  # <LF>.<LF> does not end data (content.py refuses it)
        (b"a\r\n.\rb\r\n.\r\n", b"a\r\n.\rb\r\n"),  # nor does <CR><LF>.<CR>
        (b"a\r\n\x00.\r\n.\r\n", b"a\r\n\x00.\r\n"),  # nor <CR><LF><NUL>.<CR><LF>
    ],
)
async def test_the_end_of_data_is_only_crlf_dot_crlf(raw: bytes, expected: bytes) -> None:
    data, rest = await read_in_pieces(raw + NEXT_COMMAND, [])
    assert data == expected
    assert rest == NEXT_COMMAND


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"\r", b"hello", b"x" * 300]), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
)
def test_any_cutting_of_the_stream_reads_the_same_message(lines: list[bytes], cuts: list[int]) -> None:
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    raw = b"".join(line + b"\r\n" for line in stuffed)
    stream = raw + b".\r\n" + NEXT_COMMAND
    data, rest = asyncio.run(read_in_pieces(stream, [cut for cut in cuts if cut < len(stream)]))
    assert data == raw
    assert rest == NEXT_COMMAND
    if b"\r" not in b"".join(lines):
        assert unstuff(raw) == b"".join(line + b"\r\n" for line in lines)


async def test_over_the_size_limit_is_read_to_the_end_and_dropped() -> None:
    raw = b"x" * 998 + b"\r\n"
    data, rest = await read_in_pieces(raw * 50 + b".\r\n" + NEXT_COMMAND, [700, 5000, 20000], size_limit=10000)
    assert data is DataRefusal.TOO_LARGE
    assert rest == NEXT_COMMAND


async def test_exactly_the_size_limit_is_accepted() -> None:
    raw = b"y" * 98 + b"\r\n"
    data, _ = await read_in_pieces(raw * 10 + b".\r\n", [333], size_limit=1000)
    assert data == raw * 10
    data, _ = await read_in_pieces(raw * 10 + b".\r\n", [333], size_limit=999)
    assert data is DataRefusal.TOO_LARGE


async def test_data_that_does_not_fit_the_budget_is_read_to_the_end_and_dropped() -> None:
    budget = DataBudget(5000)
    other = budget.reservation()
    assert other.grow(2000)  # another session holds 2000 bytes
    mine = budget.reservation()
    raw = b"z" * 98 + b"\r\n"
    data, rest = await read_in_pieces(raw * 40 + b".\r\n" + NEXT_COMMAND, [500, 1500, 3100], reservation=mine)
    assert data is DataRefusal.OVER_BUDGET
    assert rest == NEXT_COMMAND
    assert (mine.held, budget.in_use) == (0, 2000)  # what it had taken is given back at once
    other.release()
    fits, _ = await read_in_pieces(raw * 40 + b".\r\n", [500], reservation=mine)
    assert fits == raw * 40
    assert mine.held == budget.in_use == len(raw * 40)  # held until the session answered DATA
    mine.release()
    mine.release()
    assert budget.in_use == 0


async def test_a_connection_ending_inside_data_raises() -> None:
    reader = adopt(asyncio.StreamReader(limit=1001))
    reader.feed_data(b"Subject: cut\r\n\r\npartial")
    reader.feed_eof()
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(reader.read_message_data(None), 5)


async def test_commands_keep_their_limit_after_data() -> None:
    reader = adopt(asyncio.StreamReader(limit=1001))
    reader.feed_data(b"a\r\n.\r\n")
    await reader.read_message_data(None)
    assert isinstance(reader, SmtpStreamReader)
    assert reader._limit == 1001 < DATA_BUFFER_LIMIT
    reader.feed_data(b"x" * 1500 + b"\r\n")
    with pytest.raises(asyncio.LimitOverrunError):
        await reader.readuntil(b"\n")
