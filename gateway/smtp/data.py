"""DATA read in bulk: large chunks, the end found by a bytes search, no loop over lines.

aiosmtpd 1.4.6 reads a message one CRLF line at a time (a `readuntil` and a handful of
Python checks per line): most of the CPU of a 100 KB message. Here the stream is read
in chunks of up to CHUNK bytes, and every rule of RFC 5321 section 4.5.2 that aiosmtpd
applies is applied to the whole at once, with the very same outcome:

* the message ends at the first line that is a lone dot: `CRLF . CRLF`, where the first
  CRLF may be the one that ended the DATA command (an empty message). Nothing else ends
  it: `LF . CRLF`, `CRLF . LF`, `CR . CR` (the SMTP smuggling endings) are content, for
  relay/content.py to refuse or repair;
* a line (CRLF to CRLF) longer than the line limit: `500`, once the end has come;
* more than the size limit: `552`, once the end has come; nothing beyond the limit is
  kept meanwhile, so a client cannot make the gateway hold more than the limit;
* dot-stuffing undone: the leading dot of every line that has one goes (one replace).

Whatever the client sent after the end (a pipelined QUIT, the next MAIL) goes back to
the reader for the command loop.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from gateway.policy.values import value

CHUNK = 1 << 16
_END = b"\r\n.\r\n"
_CRLF = b"\r\n"


class Problem(StrEnum):
    TOO_LONG = "too_long"  # a line over the line limit: 500
    TOO_BIG = "too_big"  # over the size limit: 552


@value
class Received:
    """A whole message, dot-stuffing undone; or the problem it had (content None)."""

    content: bytes | None
    problem: Problem | None = None
    size: int = 0  # bytes received before the end-of-data line, dot-stuffed as sent


async def read_message(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> Received:
    """Read up to and including the end-of-data line; ConnectionResetError if the
    client goes first."""
    # The CRLF that ended the DATA command: the end-of-data line may come first.
    buffer = bytearray(_CRLF)
    searched = 0  # where the next search for the end may start
    dropped = 0  # bytes let go of once past the size limit (kept: the last 4)
    while True:
        end = buffer.find(_END, searched)
        if end >= 0:
            break
        searched = max(0, len(buffer) - len(_END) + 1)
        if size_limit and dropped + len(buffer) - 2 > size_limit:
            # Too big: read on to the end, keeping only what a split end needs.
            dropped += len(buffer) - 4
            del buffer[:-4]
            searched = 0
        chunk = await reader.read(CHUNK)
        if not chunk:
            raise ConnectionResetError("the client hung up during DATA")
        buffer += chunk
    leftover = buffer[end + len(_END) :]
    if leftover:
        _unread(reader, bytes(leftover))
    size = dropped + end  # the message's bytes: from after the first CRLF to the end's CRLF
    if size_limit and size > size_limit:
        return Received(None, Problem.TOO_BIG, size)
    message = buffer[: end + 2]  # the leading CRLF, the lines, each with its CRLF
    del buffer
    if len(message) > line_limit and _longest_line(message) > line_limit:
        return Received(None, Problem.TOO_LONG, size)
    return Received(bytes(message).replace(b"\r\n.", _CRLF)[2:], None, size)


def _longest_line(message: bytearray) -> int:
    """The longest CRLF-ended line, its CRLF included (bytes.split: no Python loop)."""
    return max(map(len, message.split(_CRLF))) + 2


def _unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Give back what was read past the end of data. StreamReader has no unread: its
    buffer is a bytearray (asyncio/streams.py, CPython 3.11 and later), read from the
    front, so what goes back goes in front of whatever came after it."""
    reader._buffer[:0] = data  # type: ignore[attr-defined]
