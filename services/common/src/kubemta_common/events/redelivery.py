"""Recognising an input a stage already handled before a crash, by asking the tracker.

An input may be handled a second time when the process that had it died after publishing its
outputs but before its acknowledgement reached the broker (a redelivery: the AMQP `redelivered`
flag, or a quorum queue's `x-delivery-count` above 0), or when its publisher flagged it as a
possible second copy (DeliveryJob.maybe_duplicate). Only then, and only with a tracker
configured, the tracker is asked whether the event that closes the stage's work was recorded
(`queued`, `routed`, a job's fate). True: the outputs are queued already. False: handled as
usual. No answer: the input goes back to its queue to be asked about again (a bounded number of
times, consumer.return_if_unanswered), then is handled as usual: at least once.
"""

from aio_pika.abc import AbstractIncomingMessage

from kubemta_common.amqp.consumer import may_be_repeated, return_if_unanswered
from kubemta_common.events.tracker_client import DuplicateChecks


async def already_recorded(
    tracker: DuplicateChecks | None,
    delivery: AbstractIncomingMessage | None,
    kind: str,
    *,
    flagged: bool = False,
    queue_id: str = "",
    job_id: str = "",
    attempt: int | None = None,
) -> bool:
    """True when this input may be repeated (`delivery` a redelivery, or `flagged`) and the tracker recorded its
    `kind` event (for `job_id` at `attempt`, else for `queue_id`); raises TransientError while an unanswered
    redelivery may still be asked about again."""
    if tracker is None or not may_be_repeated(delivery, flagged):
        return False
    if job_id:
        done = await tracker.recorded(kind, job_id=job_id, attempt=attempt)
    else:
        done = await tracker.recorded(kind, queue_id=queue_id)
    if done is None and delivery is not None:
        return_if_unanswered(delivery, kind)  # raises while it may ask again later
    return done is True
