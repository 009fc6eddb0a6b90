"""The retry schedule: the n-th retry waits the n-th delay, the last one repeats."""

import pytest

from kubemta_queue_manager.retry import retry_delay, retry_queue

SCHEDULE = (300.0, 600.0, 1200.0, 2400.0, 3600.0)


@pytest.mark.parametrize(
    ("attempts", "delay"), [(1, 300.0), (2, 600.0), (3, 1200.0), (4, 2400.0), (5, 3600.0), (6, 3600.0), (40, 3600.0)]
)
def test_delay_per_attempt_and_last_repeats(attempts: int, delay: float) -> None:
    assert retry_delay(SCHEDULE, attempts) == delay


def test_queue_names_follow_the_topology() -> None:
    assert retry_queue(SCHEDULE, 1) == "retry.5m"
    assert retry_queue(SCHEDULE, 5) == "retry.1h"
    assert retry_queue(SCHEDULE, 9) == "retry.1h"
    assert retry_queue((30.0,), 3) == "retry.30s"


def test_empty_schedule_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        retry_delay((), 1)
