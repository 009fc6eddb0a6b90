"""Which messages an admin command names: the validated `Selector`, and the `Facts` of a queued bus message
it is matched against (whatever the message's type: a delivery job, a result, an accepted message, a DSN request).

A selector matches as the services' `Decisions` view does (kubemta_common.events.decisions), so what a
command moves right away and what the message owners honour later, through the decision, are the same mail.
Its values come from operators over HTTP: `Selector.parse` refuses anything that is not a well-formed queue
id, address or domain (lengths from RFC 5321, no control, format or separator characters).
"""

import re
import unicodedata
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from kubemta.v1 import events_pb2, message_pb2
from kubemta_common.amqp.held import JOB_TYPE
from kubemta_common.events.decisions import normal_domain, normal_sender

MAX_QUEUE_ID = 64
MAX_SENDER = 256
"""RFC 5321 §4.5.3.1.3: a reverse-path is at most 256 octets."""
MAX_DOMAIN = 255
"""RFC 5321 §4.5.3.1.2: a domain is at most 255 octets."""
_QUEUE_ID = re.compile(r"[A-Za-z0-9._-]+\Z")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f<>\"\\,;]")
"""Control characters (C0, C1, DEL), space, and what cannot be part of an address outside quotes."""
_DOMAIN_FORBIDDEN = re.compile(r"[\x00-\x20\x7f-\x9f<>\"\\,;@()]")


def _checked_bytes(text: str) -> int:
    """Bytes of `text` in UTF-8; ValueError for text that has none (a lone surrogate, e.g. JSON's "\\ud800") or
    that holds a separator, control, format or unassigned character (Unicode Z* and C*: U+2028, U+202E, U+FEFF...),
    which no address needs and which would disguise a log line."""
    try:
        length = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text") from None
    if any(unicodedata.category(char)[0] in "ZC" for char in text):
        raise ValueError("no spaces, separators, control or format characters")
    return length


@dataclass(frozen=True, slots=True)
class Selector:
    """Which messages a command applies to: one of queue_id, sender, domain, or all (an events.proto Selector).

    It matches as the services' `Decisions` view does (kubemta_common.events.decisions: senders and domains
    compared in their normal form, a domain also without a trailing dot and in IDNA), so what a command moves
    right away and what the message owners honour later are the same mail."""

    queue_id: str = ""
    sender: str = ""
    """Envelope sender, compared case-insensitively; "<>" is the null sender."""
    domain: str = ""
    """Destination domain of a job, compared case-insensitively."""
    all: bool = False

    @classmethod
    def parse(
        cls,
        *,
        queue_id: str | None = None,
        sender: str | None = None,
        domain: str | None = None,
        all: bool = False,
        allow_all: bool = False,
    ) -> "Selector":
        """A validated selector; ValueError unless exactly one of queue_id, sender, domain (or `all`, when allowed)
        is given, well-formed."""
        given = [name for name, value in (("queue_id", queue_id), ("sender", sender), ("domain", domain)) if value]
        if all:
            if not allow_all:
                raise ValueError("this command does not take all")
            if given:
                raise ValueError("all takes no queue_id, sender or domain")
            return cls(all=True)
        if len(given) != 1:
            choices = "queue_id, sender, domain" + (" or all" if allow_all else "")
            raise ValueError(f"give exactly one of {choices}")
        if queue_id:
            if len(queue_id) > MAX_QUEUE_ID or not _QUEUE_ID.match(queue_id):
                raise ValueError(f"a queue id is 1-{MAX_QUEUE_ID} letters, digits and . _ -")
            return cls(queue_id=queue_id)
        if sender:
            if _checked_bytes(sender) > MAX_SENDER:
                raise ValueError(f"a sender is at most {MAX_SENDER} bytes of UTF-8")
            local, _, host = sender.rpartition("@")
            if sender != "<>" and (_FORBIDDEN.search(sender) or not local or not host):
                raise ValueError("a sender is an address (local@domain, no spaces, quotes or control characters) or <>")
            return cls(sender=sender)
        assert domain
        if _checked_bytes(domain) > MAX_DOMAIN or _DOMAIN_FORBIDDEN.search(domain) or not normal_domain(domain):
            raise ValueError(
                f"a domain is at most {MAX_DOMAIN} bytes of UTF-8, without spaces, control characters or @"
            )
        return cls(domain=domain)

    def to_proto(self) -> events_pb2.Selector:
        """The selector as events.proto's Selector."""
        return events_pb2.Selector(queue_id=self.queue_id, sender=self.sender, domain=self.domain, all=self.all)

    def matches(self, facts: "Facts | None") -> bool:
        """True when the message `facts` describes is one this selector names (an unreadable one: only `all`)."""
        if self.all:
            return True
        if facts is None:
            return False
        if self.queue_id:
            return facts.queue_id == self.queue_id
        if self.sender:
            return normal_sender(facts.sender) == normal_sender(self.sender)
        return normal_domain(self.domain) in {normal_domain(domain) for domain in facts.domains}

    def describe(self) -> str:
        """For log lines: `domain='example.com'`, or `all`."""
        if self.all:
            return "all"
        name, value = (
            next((name, value) for name, value in (("queue_id", self.queue_id), ("sender", self.sender)) if value)
            if (self.queue_id or self.sender)
            else ("domain", self.domain)
        )
        return f"{name}={value!r}"


ALL = Selector(all=True)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the selector and the events need to know of one queued message."""

    queue_id: str
    sender: str
    domains: tuple[str, ...]
    job_id: str = ""
    message_id: str = ""
    attempt: int = 0
    recipients: tuple[str, ...] = ()
    job: message_pb2.DeliveryJob | None = field(default=None, compare=False)
    """The delivery job when the message is one (or a result carrying one): what a deletion's DSN needs."""


def _job_facts(job: message_pb2.DeliveryJob) -> Facts:
    return Facts(
        queue_id=job.queue_id,
        sender=job.sender,
        domains=(job.domain,),
        job_id=job.job_id,
        message_id=job.message_id,
        attempt=job.attempts,
        recipients=tuple(job.recipients),
        job=job,
    )


def facts_of(message_type: str | None, body: bytes) -> Facts | None:
    """The facts of a bus message of AMQP `type` `message_type`; None when the type is unknown or the body does not
    decode as it."""
    try:
        if message_type == JOB_TYPE:
            return _job_facts(message_pb2.DeliveryJob.FromString(body))
        if message_type == message_pb2.DeliveryResult.DESCRIPTOR.full_name:
            return _job_facts(message_pb2.DeliveryResult.FromString(body).job)
        if message_type == message_pb2.AcceptedMessage.DESCRIPTOR.full_name:
            accepted = message_pb2.AcceptedMessage.FromString(body)
            domains = tuple(dict.fromkeys(rcpt.rpartition("@")[2] for rcpt in accepted.recipients))
            return Facts(
                accepted.queue_id,
                accepted.sender,
                domains,
                message_id=accepted.message_id,
                recipients=tuple(accepted.recipients),
            )
        if message_type == message_pb2.DsnRequest.DESCRIPTOR.full_name:
            request = message_pb2.DsnRequest.FromString(body)
            return Facts(request.queue_id, request.sender, (), job_id=request.job_id)
    except DecodeError:
        return None
    return None


__all__ = ["ALL", "Facts", "Selector", "facts_of"]
