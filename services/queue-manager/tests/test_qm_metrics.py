"""Metrics of the results consumer move by the right amounts (and not at all when publishing fails), deferred and
bounced recipients by provider and failure class."""

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from kubemta_common.bounce_class import BounceClass, classify
from kubemta_common.errors import PublishFailed

WATCHED = (
    "kubemta_recipients_delivered",
    "kubemta_recipients_deferred",
    "kubemta_recipients_bounced",
    "kubemta_bounces_sent",
    "kubemta_delay_warnings_sent",
    "kubemta_recipients_expired",
    "kubemta_undeliverable_null_sender",
    "kubemta_queue_time_seconds",
)

Key = tuple[str, str | None]
"""(sample name, None or "provider" or "provider/class")."""


def _key(name: str, labels: dict[str, str]) -> Key:
    if "provider" not in labels:
        return (name, None)
    return (name, "/".join([labels["provider"], *([labels["class"]] if "class" in labels else [])]))


def snapshot() -> dict[Key, float]:
    """Every sample of the watched families, bucket series left out."""
    return {
        _key(s.name, s.labels): s.value
        for family in REGISTRY.collect()
        if family.name in WATCHED
        for s in family.samples
        if not s.name.endswith(("_bucket", "_created"))
    }


def delta(before: dict[Key, float]) -> dict[Key, float]:
    after = snapshot()
    return {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}


def klass(result) -> str:
    """The class kubemta_common.bounce_class gives a failed result (its table is tested where it lives)."""
    return classify(result.smtp_code, result.status, result.diagnostic).bounce_class.value


PROVIDERS = ("google", "microsoft", "yahoo", "apple", "other")


def test_provider_and_class_series_exist_at_zero() -> None:
    for provider in PROVIDERS:
        assert REGISTRY.get_sample_value("kubemta_recipients_delivered_total", {"provider": provider}) is not None
        for name in ("deferred", "bounced"):
            for found in BounceClass:
                labels = {"provider": provider, "class": found.value}
                assert REGISTRY.get_sample_value(f"kubemta_recipients_{name}_total", labels) is not None, labels


def test_the_class_label_is_bounded_to_the_bounce_classes() -> None:
    for name in ("deferred", "bounced"):
        [family] = [f for f in REGISTRY.collect() if f.name == f"kubemta_recipients_{name}"]
        assert {s.labels["class"] for s in family.samples} == {found.value for found in BounceClass}


async def test_mixed_result_moves_each_counter_once(kit, manager) -> None:
    rcpts = ["a@gmail.example", "b@gmail.example", "c@gmail.example"]
    job = kit.job(rcpts, provider="google", age=timedelta(minutes=30))
    result = kit.result(job, [kit.delivered(rcpts[0]), kit.deferred(rcpts[1]), kit.bounced(rcpts[2])])
    before = snapshot()

    await manager.handle_result(result)

    assert delta(before) == {
        ("kubemta_recipients_delivered_total", "google"): 1,
        ("kubemta_recipients_deferred_total", f"google/{klass(kit.deferred('x'))}"): 1,
        ("kubemta_recipients_bounced_total", "google/invalid_recipient"): 1,
        ("kubemta_queue_time_seconds_count", None): 2,
        ("kubemta_queue_time_seconds_sum", None): 3600,
    }  # kubemta_bounces_sent_total moves when the dsn stage sends the DSN (test_qm_dsn_batcher.py)


async def test_expiry_without_route_counts_as_other(kit, manager) -> None:
    job = kit.job(["a@x.example", "b@x.example"], age=timedelta(days=6))
    result = kit.result(job, [kit.deferred("a@x.example"), kit.deferred("b@x.example")])
    before = snapshot()

    await manager.handle_result(result)

    assert delta(before) == {
        ("kubemta_recipients_bounced_total", "other/expired"): 2,
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
        ("kubemta_recipients_deferred_total", f"google/{klass(kit.deferred('x'))}"): 1,
        ("kubemta_recipients_bounced_total", "google/invalid_recipient"): 1,
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


async def test_a_deferral_counts_under_its_own_class(kit, manager) -> None:
    job = kit.job(["a@gmail.example"], provider="google")
    full = kit.deferred("a@gmail.example")
    full.status, full.diagnostic = "4.2.2", "4.2.2 Mailbox full"
    before = snapshot()

    await manager.handle_result(kit.result(job, [full]))

    assert klass(full) == "mailbox_full"
    assert delta(before) == {("kubemta_recipients_deferred_total", "google/mailbox_full"): 1}
