"""How a delivered recipient left kubemta (RecipientResult.handoff), which decides who sends its success DSN.

RFC 3461 §4.1 / §6.2.1: a recipient that asked NOTIFY=SUCCESS gets a "delivered" DSN on final
delivery, a "relayed" DSN when the message goes on to a next hop that does not support DSN,
and none from kubemta when the next hop offered DSN and was given the parameters (it reports
from then on). An LMTP server is the mailbox store, the final destination (like Postfix's
local and virtual delivery), whether or not its LHLO offers DSN.

A recipient found delivered in an earlier attempt (the journal, the tracker) keeps the handoff
recorded with it when there is one; without it, delivery over LMTP is still final, and an SMTP
next hop is taken as one without DSN (RELAYED: a sender who asked for success hears "relayed"
rather than nothing).
"""

from collections.abc import Iterable

from kubemta.v1 import message_pb2


def handoff_for(final_delivery: bool, dsn_offered: bool) -> message_pb2.Handoff.ValueType:
    """The handoff of a recipient delivered in a session: final delivery (LMTP), a next hop that offered DSN, or
    one that did not."""
    if final_delivery:
        return message_pb2.HANDOFF_DELIVERED
    return message_pb2.HANDOFF_DSN_PASSED if dsn_offered else message_pb2.HANDOFF_RELAYED


def assumed_handoff(route_kind: message_pb2.TransportKind.ValueType) -> message_pb2.Handoff.ValueType:
    """The handoff of a recipient delivered earlier whose record does not say: final over LMTP, else RELAYED."""
    return handoff_for(route_kind == message_pb2.TRANSPORT_KIND_LMTP, dsn_offered=False)


def stamp_delivered(results: Iterable[message_pb2.RecipientResult], handoff: message_pb2.Handoff.ValueType) -> None:
    """Set `handoff` on the delivered ones of `results` (the others have none: it is for OUTCOME_DELIVERED only)."""
    for result in results:
        if result.outcome == message_pb2.OUTCOME_DELIVERED:
            result.handoff = handoff
