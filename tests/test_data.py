"""DATA framed in bulk (smtp/data.py): the same framing as aiosmtpd's line-by-line
reader, whatever the chunks the bytes arrive in; and stuffed again for the backend."""

from __future__ import annotations

import asyncio

import pytest

from gateway.relay.backend import DotStuffer
from gateway.smtp.core.message import Problem
from gateway.smtp.data import CHUNK, Framer, unread

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


async def read_message(reader: asyncio.StreamReader, size_limit, line_limit):
    """The adapter's loop (server.py), collecting the pieces instead of sending them."""
    framer = Framer(size_limit, line_limit)
    pieces = []
    while not framer.done:
        data = await reader.read(CHUNK)
        if not data:
            raise ConnectionResetError("gone")
        pieces.append(framer.feed(data))
    if framer.leftover:
        unread(reader, framer.leftover)
    content = None if framer.problem else b"".join(pieces)
    return Received(content, framer.problem, framer.size)


class Received:
    def __init__(self, content, problem, size) -> None:
        self.content, self.problem, self.size = content, problem, size


MESSAGE = (
    b"Subject: framing\r\n"
    + b"\r\n"
    + b"..leading dot, stuffed\r\n"
    + b"a line\n.\r\nwith a bare LF before a dot (content, not an end)\r\n"
    + b"\r.\r a bare CR pair\r\n"
    + b"last line\r\n"
)
WIRE = MESSAGE + b".\r\n"
EXPECTED = MESSAGE.replace(b"\r\n..", b"\r\n.")
AFTER = b"QUIT\r\n"


def reader_with(*parts: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 16)
    for part in parts:
        reader.feed_data(part)
    reader.feed_eof()
    return reader


async def test_the_end_is_found_whatever_the_split() -> None:
    """Every split of the same stream, at every byte offset, reads the same message,
    and leaves what follows the end to the command loop."""
    stream = WIRE + AFTER
    for offset in range(len(stream) + 1):
        reader = reader_with(stream[:offset], stream[offset:])
        received = await read_message(reader, None, 1 << 16)
        assert received.content == EXPECTED, offset
        assert await reader.read() == AFTER, offset


async def test_one_byte_at_a_time() -> None:
    reader = reader_with(*(bytes([b]) for b in WIRE + AFTER))
    assert (await read_message(reader, None, 1 << 16)).content == EXPECTED
    assert await reader.readuntil(b"\r\n") == AFTER


async def test_an_empty_message_and_a_dot_first_line() -> None:
    assert (await read_message(reader_with(b".\r\n"), None, 1000)).content == b""
    dotted = await read_message(reader_with(b"..\r\n.\r\n"), None, 1000)
    assert dotted.content == b".\r\n"


@pytest.mark.parametrize(
    "ending", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n\x00.\r\n"], ids=repr
)
async def test_smuggling_endings_are_content(ending: bytes) -> None:
    """Only CRLF . CRLF ends a message (relay/content.py refuses or normalizes the rest)."""
    stream = b"first" + ending + b"MAIL FROM:<forged@example.com>\r\n.\r\n"
    received = await read_message(reader_with(stream), None, 1 << 16)
    assert received.content is not None and b"MAIL FROM:<forged" in received.content


async def test_too_big_is_known_at_the_end_and_never_held() -> None:
    line = b"x" * 998 + b"\r\n"
    body = line * (3 * CHUNK // len(line))
    reader = reader_with(body, b".\r\n", AFTER)
    received = await read_message(reader, 10_000, 1 << 16)
    assert received.problem is Problem.TOO_BIG and received.content is None
    assert received.size == len(body)
    assert await reader.read() == AFTER  # the session goes on after its 552


async def test_a_line_over_the_limit() -> None:
    long = b"y" * 2000 + b"\r\n"
    received = await read_message(reader_with(b"ok\r\n" + long + b".\r\n"), None, 1000)
    assert received.problem is Problem.TOO_LONG
    fits = await read_message(reader_with(b"z" * 998 + b"\r\n.\r\n"), None, 1000)
    assert fits.content == b"z" * 998 + b"\r\n"  # 1000 with its CRLF: the limit itself


async def test_a_hang_up_mid_message() -> None:
    with pytest.raises(ConnectionResetError):
        await read_message(reader_with(b"Subject: cut\r\n\r\nhalf a mess"), None, 1000)


def dot_stuffed(content: bytes, cut: int | None = None) -> bytes:
    stuffer = DotStuffer()
    parts = [content] if cut is None else [content[:cut], content[cut:]]
    return b"".join(stuffer.stuff(part) for part in parts) + stuffer.end()


def test_dot_stuffing_for_the_backend_round_trips() -> None:
    """What the backend is sent, read back as any server reads DATA, is the content,
    however the content is cut into pieces."""
    for content in (EXPECTED, b".first line\r\n..two\r\n.\r\n", b"", b"no final crlf"):
        for cut in (None, *range(len(content) + 1)):
            wire = dot_stuffed(content, cut)
            assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
            body = wire[: -len(b".\r\n")]
            unstuffed = (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]
            whole = content if content.endswith(b"\r\n") or not content else content + b"\r\n"
            assert unstuffed == whole, (content, cut)


def test_a_flood_of_cr_or_nul_is_never_held() -> None:
    """CRs and NULs are held back at a piece's end (they may belong to what follows),
    but a run of them longer than a line is one over-long line: refused, not held."""
    framer = Framer(1_000_000, 1 << 16)
    for _ in range(64):  # 4 MiB of NUL, no CRLF anywhere
        assert framer.feed(b"\x00" * CHUNK) == b""
    assert framer.problem is Problem.TOO_LONG
    assert len(framer._buffer) <= CHUNK + 8  # what is kept is a chunk, never the flood
    framer.feed(b"\r\n.\r\n")
    assert framer.done and framer.size > 4_000_000


def test_a_nul_refusal_gives_way_to_a_bare_line_end_as_the_whole_would() -> None:
    from gateway.policy.replies import BARE_NEWLINE
    from tests.sessions import in_transaction

    session = in_transaction()  # relay.bare_newline = "reject", the default
    session.message_begins(0.0)
    session.message_part(b"a\x00b\r\n")  # a NUL first...
    session.message_part(b"then a bare\nLF\r\n")  # ...then a bare LF
    assert session.message_complete(40).reply == BARE_NEWLINE
