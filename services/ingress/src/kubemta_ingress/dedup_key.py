"""The key that recognises a client's retry of a message the ingress already queued.

A client that lost the `250` after the ingress queued its message (the ingress or the
connection died in between) sends the same message again: same Message-ID, same envelope,
same body. The key is the hex SHA-256 over exactly those, as the client sent them (before
the ingress adds its trace header or missing headers), each field length-prefixed (8 bytes,
big-endian) so that no two different envelopes give the same bytes to hash (`a` + `bc` and
`ab` + `c` differ). A message without a Message-ID gets no key: two such messages cannot be
told apart from a retry, so neither is ever treated as one.
"""

import hashlib
from collections.abc import Sequence

VERSION = b"kubemta-dedup-1"
"""Hashed first, so a later change of what the key covers never matches keys of the old kind."""


def dedup_key(message_id: str, sender: str, recipients: Sequence[str], body: bytes) -> str:
    """Hex SHA-256 of the length-prefixed Message-ID, sender, recipients (in order) and body; "" without a
    Message-ID."""
    if not message_id:
        return ""
    digest = hashlib.sha256()
    fields = [VERSION, message_id.encode("utf-8"), sender.encode("utf-8", "surrogateescape")]
    fields.append(len(recipients).to_bytes(8, "big"))
    fields.extend(recipient.encode("utf-8", "surrogateescape") for recipient in recipients)
    for field in fields:
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)
    digest.update(len(body).to_bytes(8, "big"))
    digest.update(body)
    return digest.hexdigest()
