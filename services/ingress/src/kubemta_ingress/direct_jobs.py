"""Queueing a message's one delivery job straight to `deliver`, without the `inbound` queue and the queue-manager.

In the steady state a message to one domain whose route the dns-resolver answered a moment ago needs no decision
between its acceptance and its first attempt: the queue-manager would split it into that one job, find the fresh
route answer and queue the job to `deliver` (kubemta_common.route_shortcut). The ingress does the same here, with
the same code, and saves the message a quorum queue and a service hop. `DirectJobs.job` returns the job, route
attached, only when all of these hold:

- `KUBEMTA_ROUTE_SHORTCUT` is on (it turns off both shortcuts);
- the message makes exactly one job (one destination domain). A message of several jobs goes to `inbound`: a
  failed publish of one of its jobs would leave the others queued, and the client's retry would queue them again;
  the queue-manager publishes all of them or retries;
- the queue-manager would not DKIM-sign it (kubemta_mail_auth.dkim.trust.may_sign, with KUBEMTA_DKIM_KEYS_DIR
  set): the signing keys stay in the queue-manager, never in the internet-facing pod (README, "DKIM signing");
- `RouteShortcut.attach`: the operators' decisions were read and none applies, and the domain's answer is fresh.

The job is then published to `deliver` in place of the AcceptedMessage to `inbound`, with the same promise: the
client's `250` only after the broker confirmed it (acceptance.py). The `queued` and `routed` events the
queue-manager would have written follow the `received` event, emitted (not awaited) after the confirm. Retries,
bounces and delay warnings stay the queue-manager's: the job's result comes back to it over `results` as for any
other job. Every message that does not qualify is queued to `inbound` as before.
"""

from itertools import islice

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common import job_metrics
from kubemta_common.amqp.broker import Broker
from kubemta_common.events.decision_follower import BackgroundFollower, JobVerdicts
from kubemta_common.events.queued_event import queued as queued_event
from kubemta_common.events.routed_event import routed as routed_event
from kubemta_common.route_answers import RouteAnswers
from kubemta_common.route_shortcut import RouteAnswerFollower, RouteShortcut
from kubemta_common.splitter import iter_jobs
from kubemta_common.timestamps import now_timestamp
from kubemta_ingress.settings import IngressSettings
from kubemta_mail_auth.dkim.trust import may_sign


class DirectJobs:
    """Decides, per accepted message, whether its one job goes straight to `deliver` (see the module docstring).

    `hostname`: the domain of an unqualified recipient (as the queue-manager's splitter); `signing`: the
    queue-manager DKIM-signs trusted mail (KUBEMTA_DKIM_KEYS_DIR is set)."""

    def __init__(self, shortcut: RouteShortcut, *, hostname: str, signing: bool) -> None:
        self._shortcut = shortcut
        self._hostname = hostname
        self._signing = signing

    async def job(self, head: message_pb2.AcceptedMessage) -> message_pb2.DeliveryJob | None:
        """The one job of `head` (an AcceptedMessage without its content) with its route, or None: `inbound`."""
        if self._signing and may_sign(head):
            return None
        jobs = list(islice(iter_jobs(head, self._hostname), 2))
        if len(jobs) != 1:
            return None
        (job,) = jobs
        if not await self._shortcut.attach(job):
            return None
        return job


def direct_events(head: message_pb2.AcceptedMessage, job: message_pb2.DeliveryJob) -> list[events_pb2.LifecycleEvent]:
    """The `queued` and `routed` events of `job`, as the queue-manager writes them, timed now: build them before the
    publish (the worker may record its attempt before the confirm returns) and emit them after its confirm."""
    at = now_timestamp()
    entry = events_pb2.QueuedJob(job_id=job.job_id, domain=job.domain, recipients=job.recipients)
    queued = queued_event(head, [entry])
    queued.time.CopyFrom(at)
    routed = routed_event(job, job.route)
    routed.time.CopyFrom(at)
    return [queued, routed]


def count_direct_job() -> None:
    """Count a confirmed direct job as the queue-manager counts a split message and its jobs."""
    job_metrics.MESSAGES_SPLIT.inc()
    job_metrics.JOBS_CREATED.inc()


class DirectJobsFollowers:
    """What `DirectJobs` reads while the ingress runs: the resolver's route answers (the `routes` stream) and the
    operators' decisions (the `decisions` stream), each followed by a background task from `start` to `stop`.
    `hostname` and `signing` as DirectJobs'."""

    def __init__(self, *, answers_size: int, decisions_max_age: float, hostname: str, signing: bool) -> None:
        self._answers = RouteAnswers(answers_size)
        self._decisions = BackgroundFollower(decisions_max_age)
        self._answer_follower: RouteAnswerFollower | None = None
        self._hostname = hostname
        self.signing = signing

    @classmethod
    def from_settings(cls, settings: IngressSettings) -> "DirectJobsFollowers | None":
        """The followers for these settings; None when KUBEMTA_ROUTE_SHORTCUT is off (every message to
        `inbound`). The queue-manager signs trusted mail when KUBEMTA_DKIM_KEYS_DIR is set."""
        if not settings.route_shortcut:
            return None
        return cls(
            answers_size=settings.route_answers_size,
            decisions_max_age=settings.decisions_max_age,
            hostname=settings.hostname,
            signing=settings.dkim_keys_dir is not None,
        )

    def start(self, broker: Broker) -> DirectJobs:
        """Start following both streams on `broker`; the `DirectJobs` that asks them."""
        decisions = self._decisions.start(broker)
        self._answer_follower = RouteAnswerFollower(broker, self._answers)
        self._answer_follower.start()
        verdicts = JobVerdicts(decisions.decisions, decisions.ready)
        shortcut = RouteShortcut(self._answers, verdicts, decisions_ready=decisions.ready)
        return DirectJobs(shortcut, hostname=self._hostname, signing=self.signing)

    async def stop(self) -> None:
        """Stop following (idempotent)."""
        if self._answer_follower is not None:
            await self._answer_follower.stop()
            self._answer_follower = None
        await self._decisions.stop()
