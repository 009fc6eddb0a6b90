"""Splitting an accepted message into delivery jobs: one job per destination domain.

Domains are compared lower-cased (RFC 5321 §2.4: domain names are case-insensitive)
and keep the order in which their first recipient appeared; a recipient's local part
is kept exactly as given. Exact duplicate recipients are delivered once.

Each job carries what the sender asked of the DSN extension (RFC 3461) for its own recipients
(NOTIFY, ORCPT) and for the message (ENVID, RET): the queue-manager reads them again when the
job's result comes back, and the worker passes them on to a next hop that offers DSN.
"""

from collections.abc import Iterator

from kubemta.v1 import message_pb2


def recipient_domain(recipient: str, default_domain: str) -> str:
    """The lower-cased domain of an address; `default_domain` for an unqualified one (e.g. `postmaster`)."""
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain:
        return default_domain.lower().rstrip(".")
    return domain.lower().rstrip(".")


def group_by_domain(recipients: list[str], default_domain: str) -> dict[str, list[str]]:
    """Recipients grouped by domain, domains and recipients in their original order, duplicates dropped."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for recipient in recipients:
        if recipient in seen:
            continue
        seen.add(recipient)
        groups.setdefault(recipient_domain(recipient, default_domain), []).append(recipient)
    return groups


def split(message: message_pb2.AcceptedMessage, default_domain: str) -> list[message_pb2.DeliveryJob]:
    """One DeliveryJob per destination domain, with job ids `<queue_id>.<n>` counted from 1."""
    return list(iter_jobs(message, default_domain))


def iter_jobs(message: message_pb2.AcceptedMessage, default_domain: str) -> Iterator[message_pb2.DeliveryJob]:
    """The jobs of `split`, made one at a time: each holds its own copy of the content, so a large message
    to many domains must never have all of them in memory at once."""
    dsn = message.recipient_dsn
    for number, (domain, recipients) in enumerate(group_by_domain(list(message.recipients), default_domain).items()):
        job = message_pb2.DeliveryJob(
            queue_id=message.queue_id,
            job_id=f"{message.queue_id}.{number + 1}",
            sender=message.sender,
            domain=domain,
            recipients=recipients,
            content=message.content,
            smtputf8=message.smtputf8,
            generated=message.generated,
            message_id=message.message_id,
            submitter=message.authenticated_user,
            envid=message.envid,
            ret=message.ret,
        )
        # tags and recipient_dsn only when there are some: empty containers passed to the constructor cost ~1 us
        if message.tags:
            job.tags.extend(message.tags)
        if dsn:
            for rcpt in recipients:
                if rcpt in dsn:
                    job.recipient_dsn[rcpt].CopyFrom(dsn[rcpt])
        job.arrival_time.CopyFrom(message.arrival_time)
        yield job
