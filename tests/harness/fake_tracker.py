"""Stand-ins for what the services ask outside their bus in unit tests: the tracker's duplicate checks
(kubemta_common.events.tracker_client: DuplicateChecks, DeliveredRecipients) and the operators' decisions
(kubemta_common.events.decisions.DecisionView). Both record every question."""

from datetime import datetime
from typing import Any

from kubemta.v1 import events_pb2
from kubemta_common.events.decisions import GO_ON, Action, Verdict

Question = tuple[str, str, str, int | None]
"""A `recorded` question: (kind, queue_id, job_id, attempt)."""

VERBS = {
    Action.DELETE: events_pb2.DECISION_VERB_DELETE,
    Action.HOLD: events_pb2.DECISION_VERB_HOLD,
    Action.NONE: events_pb2.DECISION_VERB_RELEASE,
}


class FakeTracker:
    """`recorded` answers from `answers` (by question), else `answer` (None: unknown); `delivered_recipients`
    answers `delivered`. `asked` keeps every question: a `recorded` one as its Question, a
    `delivered_recipients` one as the job id."""

    def __init__(
        self, answer: bool | None = None, *, delivered: list[events_pb2.RecipientOutcome] | None = None
    ) -> None:
        self.answer = answer
        self.answers: dict[Question, bool | None] = {}
        self.delivered = delivered
        self.asked: list[Question | str] = []

    async def recorded(
        self, kind: str, *, queue_id: str = "", job_id: str = "", attempt: int | None = None
    ) -> bool | None:
        question = (kind, queue_id, job_id, attempt)
        self.asked.append(question)
        return self.answers.get(question, self.answer)

    async def delivered_recipients(self, job_id: str) -> list[events_pb2.RecipientOutcome] | None:
        self.asked.append(job_id)
        return self.delivered


def admin_decision(action: Action, *, dsn: bool = False, decision_id: str = "D1") -> events_pb2.AdminDecision:
    """An operator's decision (actor "ops") that leads to `action` (NONE: a RELEASE)."""
    return events_pb2.AdminDecision(decision_id=decision_id, actor="ops", verb=VERBS[action], dsn=dsn)


class FakeDecisions:
    """Answers every verdict with `given` (GO_ON until `decide`); `asked` keeps each question's arguments."""

    def __init__(self, given: Verdict = GO_ON) -> None:
        self.given = given
        self.asked: list[dict[str, Any]] = []

    @classmethod
    def deciding(cls, action: Action, *, dsn: bool = False, decision_id: str = "D1") -> "FakeDecisions":
        """Decisions that answer `action` (the decision behind it: `admin_decision`)."""
        decisions = cls()
        decisions.decide(action, dsn=dsn, decision_id=decision_id)
        return decisions

    def decide(self, action: Action, *, dsn: bool = False, decision_id: str = "D1") -> None:
        """From now on answer `action`, decided by `admin_decision(action, dsn=, decision_id=)`."""
        self.given = Verdict(action, admin_decision(action, dsn=dsn, decision_id=decision_id), dsn)

    def verdict(
        self, *, queue_id: str, sender: str, domain: str, arrival: datetime, released_at: datetime | None = None
    ) -> Verdict:
        self.asked.append({"queue_id": queue_id, "sender": sender, "domain": domain, "arrival": arrival})
        if released_at is not None:
            self.asked[-1]["released_at"] = released_at
        return self.given
