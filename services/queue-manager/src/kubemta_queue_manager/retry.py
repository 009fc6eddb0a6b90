"""The retry schedule: how long a deferred job waits before its next attempt.

`KUBEMTA_RETRY_SCHEDULE` lists the delays; the n-th retry waits the n-th delay and
the last delay repeats (like Postfix's backoff capped at maximal_backoff_time). Each
delay has its own TTL queue, `retry.<delay>`, that dead-letters back to `route`.
"""

from collections.abc import Sequence

from kubemta_common.amqp.topology import retry_queue_name


def retry_delay(schedule: Sequence[float], attempts: int) -> float:
    """Seconds to wait before the next attempt of a job that has made `attempts` attempts (1 or more)."""
    if not schedule:
        raise ValueError("the retry schedule is empty")
    index = min(max(attempts, 1) - 1, len(schedule) - 1)
    return schedule[index]


def retry_queue(schedule: Sequence[float], attempts: int) -> str:
    """The delay queue (and routing key) for the next attempt after `attempts` attempts."""
    return retry_queue_name(retry_delay(schedule, attempts))
