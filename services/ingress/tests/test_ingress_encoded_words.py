"""An envelope address is never decoded: RFC 2047 encoded words in a path are refused, not turned into
another address (the email package's parser, which reads quoted local parts, would decode them)."""

import pytest


@pytest.mark.parametrize(
    "path",
    [
        '<"=?utf-8?b?Ym9i?="@example.org>',  # would have become bob@example.org
        '<"=?utf-8?q?abc?="@example.org>',
        '<"=?utf-8?q?=0D=0AAction=3A_delivered?="@example.org>',
        '<@relay.example:"=?utf-8?b?Ym9i?="@example.org>',
    ],
)
async def test_a_quoted_encoded_word_is_refused_not_decoded(start_server, path: str) -> None:
    harness = await start_server(local_domains=("example.org",))
    client = await harness.connect()
    assert (await client.last(f"MAIL FROM:{path}")).startswith("501 5.1.")
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 ")
    reply = await client.last(f"RCPT TO:{path}")
    assert reply.startswith("501 5.1."), reply
    assert (await client.last("RCPT TO:<bob@example.org>")).startswith("250 ")


async def test_an_unquoted_encoded_word_is_an_ordinary_local_part_kept_as_it_is(start_server) -> None:
    harness = await start_server(local_domains=("example.org",))
    client = await harness.connect()
    assert (await client.last("MAIL FROM:<a@example.net>")).startswith("250 ")
    assert (await client.last("RCPT TO:<=?utf-8?b?Ym9i?=@example.org>")).startswith("250 ")
    assert (await client.last('RCPT TO:<"a b"@example.org>')).startswith("250 ")  # quoted, no encoded word
