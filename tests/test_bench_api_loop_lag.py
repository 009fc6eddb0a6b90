"""`python -m bench.api_loop_lag` runs: its app answers the shapes it sends (the figures are not asserted)."""

from bench.api_loop_lag import _app, measure, shapes


async def test_the_small_shape_is_queued_and_the_ticker_measured() -> None:
    status, took, late = await measure(_app(), shapes()["1 KiB text"])
    assert status == 202
    assert took > 0 and late >= 0


async def test_the_recipient_shape_is_within_the_default_recipient_limit() -> None:
    body = shapes()["1,000 named recipients"]
    assert len(body["to"]) == 1000
    status, _, _ = await measure(_app(), body)
    assert status == 202
