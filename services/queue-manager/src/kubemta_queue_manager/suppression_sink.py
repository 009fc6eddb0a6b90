"""Where the queue-manager reports recipients that should no longer be mailed: the suppression hook.

A recipient that bounced permanently (not expired, not deleted by an operator) with the class
`invalid_recipient` and hard (kubemta_common.bounce_class) does not exist: mailing it again only
hurts the sending reputation. The results handler calls `suppress` for each one after the
result's outputs were confirmed; the implementation (a publisher of SuppressionChange to the
`suppressions` stream) buffers and never blocks the handler, so an outage of the suppression
list never stops mail.
"""

from typing import Protocol


class SuppressionSink(Protocol):
    """Takes recipients to suppress; non-blocking (the implementation buffers and publishes later)."""

    def suppress(self, address: str, *, reason: str, queue_id: str, diagnostic: str) -> None:
        """Suppress `address` for `reason` (the bounce class), caused by message `queue_id`'s reply `diagnostic`."""
