"""Which accepted messages kubemta DKIM-signs: the queue-manager signs them, and the ingress leaves them to it (it
queues only messages that are not signed straight to `deliver`: kubemta_ingress.direct_jobs)."""

from kubemta.v1 import message_pb2


def may_sign(accepted: message_pb2.AcceptedMessage) -> bool:
    """True when kubemta may vouch for the message with its DKIM signature.

    Only mail the ingress trusted (an authenticated session, whose From: it checked against the
    user's identities, or a client in KUBEMTA_RELAY_NETWORKS) and kubemta's own DSNs: signing a
    stranger's `From: ceo@example.com` would hand a forger a valid, DMARC-aligned signature.
    """
    return accepted.generated or accepted.trust != message_pb2.TRUST_UNTRUSTED
