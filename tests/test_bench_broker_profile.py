"""bench.broker_profile's parsing of the broker's reduction counts and its report (the load run itself is
`python -m bench.broker_profile`, not part of `make test`)."""

from bench.broker_profile import Profile, parse_deltas, report

VHOST = "kubemta-bench-1a2b"


def test_queue_servers_are_named_by_queue_and_lines_of_one_group_add_up() -> None:
    text = "\n".join(
        [
            f"process {VHOST}_inbound\t300",
            f"process {VHOST}_deliver\t200",
            "channel kubemta-ingress publishing\t100",
            "channel kubemta-ingress publishing\t50",
            "process ra_log_wal\t120",
            "process other_vhost_inbound\t7",
            "ok",  # rabbitmqctl eval's own result line
            "garbage without a tab",
            "label\tnot-a-number",
        ]
    )
    assert parse_deltas(text, VHOST) == {
        "queue inbound": 300,
        "queue deliver": 200,
        "channel kubemta-ingress publishing": 150,
        "process ra_log_wal": 120,
        "process other_vhost_inbound": 7,
    }


def test_the_report_splits_the_broker_cpu_by_share_of_reductions() -> None:
    profile = Profile(
        delivered=1000,
        seconds=2.0,
        cpu_ms={"ingress": 1.0, "rabbitmq": 2.0},
        reductions={"queue inbound": 750, "process ra_log_wal": 250, "process gone": -5},
        events_entries=500,
    )
    text = report(profile, top=5)
    assert "delivered 1000 messages in 2.0 s (500/s)" in text
    assert "ingress 1.00, rabbitmq 2.00; total 3.00" in text
    assert "events stream entries per delivered message: 0.50" in text
    [inbound] = [line for line in text.splitlines() if line.startswith("queue inbound")]
    assert inbound.split()[-2:] == ["75.0%", "1.500"]
