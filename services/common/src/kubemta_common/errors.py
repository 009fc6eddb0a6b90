"""Error hierarchy shared by the services.

A `TransientError` means "try again later" (SMTP 4xx, AMQP requeue); a
`PermanentError` means "this will never work" (SMTP 5xx, bounce). Each service maps
these to its protocol in exactly one place.
"""


class KubemtaError(Exception):
    """Base class of every kubemta error."""


class TransientError(KubemtaError):
    """A failure that may succeed when retried."""


class PermanentError(KubemtaError):
    """A failure that will not succeed when retried."""


class PublishFailed(TransientError):
    """The broker did not confirm a publish (down, nack, unroutable or timed out).

    `maybe_published`: the message may be queued all the same (no confirm came within the timeout, or the
    connection broke after it was sent); False when the broker cannot have it (not connected, nacked,
    returned as unroutable). A caller that promised "once" (an Idempotency-Key) must not act as if nothing
    was queued when it is True.
    """

    def __init__(self, message: str, *, maybe_published: bool = False) -> None:
        super().__init__(message)
        self.maybe_published = maybe_published


class MessageTooLarge(PermanentError):
    """The broker refuses a message this large (its `max_message_size`): retrying cannot help."""


class ConfigError(KubemtaError):
    """Invalid configuration; the service refuses to start."""
