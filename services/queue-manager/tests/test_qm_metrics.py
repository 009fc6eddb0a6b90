"""Metrics of the results consumer move by the right amounts (and not at all when publishing fails)."""

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from kubemta_common.errors import PublishFailed


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


NAMES = [
    ("kubemta_recipients_delivered_total", "google"),
    ("kubemta_recipients_deferred_total", "google"),
    ("kubemta_recipients_bounced_total", "google"),
    ("kubemta_recipients_bounced_total", "other"),
    ("kubemta_bounces_sent_total", None),
    ("kubemta_delay_warnings_sent_total", None),
    ("kubemta_recipients_expired_total", None),
    ("kubemta_undeliverable_null_sender_total", None),
    ("kubemta_queue_time_seconds_count", None),
    ("kubemta_queue_time_seconds_sum", None),
]


def snapshot() -> dict[tuple[str, str | None], float]:
    return {(name, provider): sample(name, provider=provider) if provider else sample(name) for name, provider in NAMES}


def delta(before: dict[tuple[str, str | None], float]) -> dict[tuple[str, str | None], float]:
    after = snapshot()
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_provider_series_exist_at_zero() -> None:
    for name in ("delivered", "deferred", "bounced"):
        for provider in ("google", "microsoft", "yahoo", "apple", "other"):
            assert REGISTRY.get_sample_value(f"kubemta_recipients_{name}_total", {"provider": provider}) is not None


async def test_mixed_result_moves_each_counter_once(kit, manager) -> None:
    rcpts = ["a@gmail.example", "b@gmail.example", "c@gmail.example"]
    job = kit.job(rcpts, provider="google", age=timedelta(minutes=30))
    result = kit.result(job, [kit.delivered(rcpts[0]), kit.deferred(rcpts[1]), kit.bounced(rcpts[2])])
    before = snapshot()

    await manager.handle_result(result)

    assert delta(before) == {
        ("kubemta_recipients_delivered_total", "google"): 1,
        ("kubemta_recipients_deferred_total", "google"): 1,
        ("kubemta_recipients_bounced_total", "google"): 1,
        ("kubemta_queue_time_seconds_count", None): 2,
        ("kubemta_queue_time_seconds_sum", None): 3600,
    }  # kubemta_bounces_sent_total moves when the dsn stage sends the DSN (test_qm_dsn_batcher.py)


async def test_expiry_without_route_counts_as_other(kit, manager) -> None:
    job = kit.job(["a@x.example", "b@x.example"], age=timedelta(days=6))
    result = kit.result(job, [kit.deferred("a@x.example"), kit.deferred("b@x.example")])
    before = snapshot()

    await manager.handle_result(result)

    assert delta(before) == {
        ("kubemta_recipients_bounced_total", "other"): 2,
        ("kubemta_recipients_expired_total", None): 2,
        ("kubemta_queue_time_seconds_count", None): 2,
        ("kubemta_queue_time_seconds_sum", None): 2 * 6 * 86400,
    }


async def test_delay_warning_and_null_sender_counters(kit, manager) -> None:
    before = snapshot()
    warned = kit.job(["a@x.example"], provider="google", age=timedelta(hours=5))
    await manager.handle_result(kit.result(warned, [kit.deferred("a@x.example")]))
    null = kit.job(["b@x.example"], sender="", provider="google")
    await manager.handle_result(kit.result(null, [kit.bounced("b@x.example")]))

    assert delta(before) == {
        ("kubemta_recipients_deferred_total", "google"): 1,
        ("kubemta_recipients_bounced_total", "google"): 1,
        ("kubemta_undeliverable_null_sender_total", None): 1,
        ("kubemta_queue_time_seconds_count", None): 1,
        ("kubemta_queue_time_seconds_sum", None): 600,
    }


async def test_nothing_counted_when_publishing_fails(kit, manager, publisher) -> None:
    publisher.fail = True
    job = kit.job(["a@x.example", "b@x.example"], provider="google")
    before = snapshot()

    with pytest.raises(PublishFailed):
        await manager.handle_result(kit.result(job, [kit.deferred("a@x.example"), kit.bounced("b@x.example")]))

    assert delta(before) == {}
