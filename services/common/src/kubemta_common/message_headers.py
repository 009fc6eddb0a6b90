"""The header block of a message as it travels (CRLF lines): what DSNs return of it."""


def header_block(content: bytes, limit: int) -> bytes:
    """The header block of `content` with its empty line, cut after the last whole line within `limit` octets
    (nothing when not even one line fits)."""
    end = content.find(b"\r\n\r\n")
    block = content if end < 0 else content[: end + 4]
    if len(block) <= limit:
        return block
    cut = block.rfind(b"\r\n", 0, limit)
    return block[: cut + 2] if cut >= 0 else b""
