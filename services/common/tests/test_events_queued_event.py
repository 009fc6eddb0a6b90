"""queued_event.queued: the QueuedJob entries a publisher of jobs keeps for the jobs it published become the
event's jobs, as copies."""

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.events.queued_event import queued


def test_queued_holds_copies_of_the_queued_jobs() -> None:
    accepted = message_pb2.AcceptedMessage(queue_id="Q1", message_id="<m@x>", recipients=["a@d.example", "b@e.example"])
    jobs = [
        message_pb2.DeliveryJob(job_id="Q1.1", domain="d.example", recipients=["a@d.example"]),
        message_pb2.DeliveryJob(job_id="Q1.2", domain="e.example", recipients=["b@e.example"]),
    ]
    entries = [events_pb2.QueuedJob(job_id=j.job_id, domain=j.domain, recipients=j.recipients) for j in jobs]
    event = queued(accepted, entries)
    expected = events_pb2.LifecycleEvent(queue_id="Q1", message_id="<m@x>")
    for job in jobs:  # what the event said when it was built from the jobs themselves
        expected.queued.jobs.add(job_id=job.job_id, domain=job.domain, recipients=list(job.recipients))
    assert event == expected
    assert [(j.job_id, list(j.recipients)) for j in event.queued.jobs] == [
        ("Q1.1", ["a@d.example"]),
        ("Q1.2", ["b@e.example"]),
    ]
    entries[0].recipients.append("changed@d.example")  # the event holds copies
    assert list(event.queued.jobs[0].recipients) == ["a@d.example"]
