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
    """The broker did not confirm a publish (down, nack, unroutable or timed out)."""


class MessageTooLarge(PermanentError):
    """The broker refuses a message this large (its `max_message_size`): retrying cannot help."""


class ConfigError(KubemtaError):
    """Invalid configuration; the service refuses to start."""
