"""Route answers for unit tests of the route shortcut (the queue-manager's and the ingress' direct jobs): one
sample MX route, and a `RouteAnswers` map holding that route's answer for some domains, fresh or stale."""

import time

from kubemta.v1 import message_pb2
from kubemta_common.route_answers import RouteAnswers, answer_record, parse_answer


def sample_route() -> message_pb2.Route:
    """An MX route of three equal-preference hosts, 192.0.2.1-3."""
    return message_pb2.Route(
        kind=message_pb2.TRANSPORT_KIND_SMTP,
        source="mx",
        provider="other",
        hosts=[
            message_pb2.RouteHost(hostname=f"mx{n}.example.org", address=f"192.0.2.{n}", port=25, preference=10)
            for n in (1, 2, 3)
        ],
    )


def fresh_answers(
    *domains: str, fresh_for: float = 300.0, resolved: float | None = None, into: RouteAnswers | None = None
) -> RouteAnswers:
    """`into` (a new map when None) with sample_route's answer for each domain, resolved at `resolved` (now) and
    fresh for `fresh_for` seconds from then."""
    answers = RouteAnswers() if into is None else into
    now = time.time() if resolved is None else resolved
    for domain in domains:
        record = answer_record(domain, sample_route(), now=now, fresh_for=fresh_for).SerializeToString()
        answer = parse_answer(record, now)
        assert answer is not None
        answers.add(answer)
    return answers
