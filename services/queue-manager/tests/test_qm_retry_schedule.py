"""The retry schedule's edges: a job not yet attempted, a one-delay schedule, and the error for an empty one."""

import pytest

from kubemta_queue_manager.retry import retry_delay, retry_queue


def test_a_job_with_no_attempt_yet_waits_the_first_delay() -> None:
    assert retry_delay((300.0, 600.0), 0) == 300.0
    assert retry_queue((300.0, 600.0), 0) == "retry.5m"


def test_a_one_delay_schedule_repeats_its_delay() -> None:
    assert [retry_delay((120.0,), attempts) for attempts in (1, 2, 10)] == [120.0, 120.0, 120.0]


def test_an_empty_schedule_is_refused_with_a_message_naming_it() -> None:
    with pytest.raises(ValueError) as raised:
        retry_delay((), 3)
    assert str(raised.value) == "the retry schedule is empty"
