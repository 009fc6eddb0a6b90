"""The tracker API's bound on request bodies: kubemta_common.http_body_limit.BodyLimit, counting its refusals in
`kubemta_tracker_refused_requests_total{reason}`.

uvicorn reads a body of any size and waits for it as long as the client likes; the tracker's
NetworkPolicy admits only kubemta's own pods and `allowedFrom`, and KUBEMTA_TRACKER_MAX_BODY
(64 KiB) and KUBEMTA_TRACKER_BODY_TIMEOUT bound the rest (see the common module for how).
"""

from kubemta_common.http_body_limit import BodyLimit as CommonBodyLimit
from kubemta_tracker import metrics


class BodyLimit(CommonBodyLimit):
    """Request bodies of at most `max_body` bytes within `timeout` seconds; refusals counted by reason."""

    def refused(self, reason: str) -> None:
        metrics.REFUSED_REQUESTS.labels(reason=reason).inc()
