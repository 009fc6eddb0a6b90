"""The delivery journal: recipients this worker pod delivered, on its own disk, written in the same event-loop
iteration that read the remote server's reply.

A worker killed after the remote server took a message and before its `attempted` event was confirmed on the
stream leaves a job the tracker cannot know as delivered; the broker hands it back, and without this journal it is
sent again. The stream's confirm takes about a millisecond, but on a busy worker the `attempted` event is several
loop iterations behind the reply, and a worker holds dozens of jobs: a kill at the wrong moment repeats several of
them. A `write(2)` to an append-only file in the iteration that has the reply leaves (almost) no such window, and
the file survives the process: in Kubernetes the restarted container keeps its emptyDir (KUBEMTA_DELIVERY_JOURNAL
under /tmp), so the restarted worker, which gets the job back when it is the only consumer, finds it there. Another
replica that gets it asks the tracker, as before.

One JSON line per delivery: {"job": job id, "delivered": [[recipient, code, status, diagnostic, remote MTA, handoff],
...]}, the handoff (message_pb2.Handoff, which decides the success DSN) as its number; a line written before it was
recorded has five items, and its recipients are read without one (HANDOFF_UNSPECIFIED: the handler decides).
The file is bounded: past `max_bytes` it becomes `<path>.1` (the one before is dropped) and a new one starts, so a
look-up reads at most twice `max_bytes`; it only runs for redelivered or flagged jobs.
"""

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from kubemta.v1 import message_pb2

logger = logging.getLogger(__name__)

MAX_BYTES = 8 * 1024 * 1024
"""The journal's size before it is rotated (a few tens of thousands of deliveries)."""


class DeliveryJournal:
    """Appends the delivered recipients of each attempt; answers which recipients of a job it delivered."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self._path = path
        self._max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def record(self, job_id: str, results: Iterable[message_pb2.RecipientResult]) -> None:
        """Append the delivered ones of `results` (nothing when none was delivered). Never raises: a journal that
        cannot be written costs duplicate protection, not the delivery."""
        delivered = [
            [r.recipient, r.smtp_code, r.status, r.diagnostic, r.remote_mta, int(r.handoff)]
            for r in results
            if r.outcome == message_pb2.OUTCOME_DELIVERED
        ]
        if not delivered:
            return
        line = (json.dumps({"job": job_id, "delivered": delivered}, ensure_ascii=True) + "\n").encode()
        try:
            os.write(self._fd, line)
            self._size += len(line)
            if self._size > self._max_bytes:
                self._rotate()
        except OSError as exc:
            logger.warning("delivery journal %s not written: %s", self._path, exc)

    def _rotate(self) -> None:
        os.replace(self._path, self._path.with_name(self._path.name + ".1"))
        os.close(self._fd)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0

    def delivered(self, job_id: str) -> dict[str, message_pb2.RecipientResult]:
        """The recipients of `job_id` this journal holds as delivered (lines it cannot read are skipped)."""
        found: dict[str, message_pb2.RecipientResult] = {}
        needle = json.dumps(job_id, ensure_ascii=True).encode()
        for path in (self._path.with_name(self._path.name + ".1"), self._path):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for raw in data.splitlines():
                if needle not in raw:
                    continue
                try:
                    entry = json.loads(raw)
                    if entry.get("job") != job_id:
                        continue
                    for recipient, code, status, diagnostic, remote_mta, *rest in entry["delivered"]:
                        found[str(recipient)] = message_pb2.RecipientResult(
                            recipient=str(recipient),
                            outcome=message_pb2.OUTCOME_DELIVERED,
                            smtp_code=int(code),
                            status=str(status),
                            diagnostic=str(diagnostic),
                            remote_mta=str(remote_mta),
                            handoff=_handoff(rest),
                        )
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
        return found

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def _handoff(rest: list[object]) -> message_pb2.Handoff.ValueType:
    """The recorded handoff (the sixth item), HANDOFF_UNSPECIFIED when the line has none or an unknown one."""
    if len(rest) == 1 and type(rest[0]) is int and rest[0] in message_pb2.Handoff.values():
        return message_pb2.Handoff.ValueType(rest[0])
    return message_pb2.HANDOFF_UNSPECIFIED
