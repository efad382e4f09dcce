"""DATA framed in bulk, as it arrives: no loop over lines, no whole message held.

aiosmtpd 1.4.6 reads a message one CRLF line at a time (a `readuntil` and a handful of
Python checks per line: most of the CPU of a 100 KB message), and holds all of it. Here
the stream is fed in chunks as the client sends them, and every rule of RFC 5321
section 4.5.2 that aiosmtpd applies is applied to each chunk at once, with the very
same outcome, whatever the chunk boundaries:

* the message ends at the first line that is a lone dot: `CRLF . CRLF`, where the first
  CRLF may be the one that ended the DATA command (an empty message). Nothing else ends
  it: `LF . CRLF`, `CRLF . LF`, `CR . CR` (the SMTP smuggling endings) are content, for
  relay/content.py to refuse or normalize;
* a line (CRLF to CRLF) longer than the line limit: `500`, once the end has come;
* more than the size limit: `552`, once the end has come; nothing is passed on once
  past the limit;
* dot-stuffing undone: the leading dot of every line that has one goes (one replace).

Each piece handed out ends where no CRLF-dot, no CR-LF pair and no CR-NUL-LF run is cut
in two, so the pieces can be screened, normalized and stuffed again one by one exactly as
the whole would be. Whatever the client sent after the end (a pipelined QUIT, the next
MAIL) is `leftover`, for the command loop.
"""

from __future__ import annotations

import asyncio

from gateway.smtp.core.message import Problem

CHUNK = 1 << 16
_END = b"\r\n.\r\n"
_CRLF = b"\r\n"
_HELD = b"\r\x00"  # CR and NUL: what a piece may not end with (see the module docstring)


class Framer:
    """One message's DATA stream: `feed` what arrives, get back its content so far."""

    __slots__ = ("_buffer", "_first", "_line", "done", "leftover", "line_limit", "problem",
                 "size", "size_limit")  # fmt: skip

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit
        self.line_limit = line_limit
        # The CRLF that ended the DATA command: the end-of-data line may come first.
        self._buffer = bytearray(_CRLF)
        self._first = True  # that CRLF is not content
        self._line = 0  # bytes of the current line handed out so far
        self.size = 0  # bytes of the message as sent (dot-stuffed), up to the end's CRLF
        self.problem: Problem | None = None
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        """The content `data` completes (dot-stuffing undone; b"" when none yet, or once
        there is a problem). At the end: `done`, and `leftover` what followed it."""
        buffer = self._buffer
        start = max(0, len(buffer) - len(_END) + 1)  # an end may straddle what was held
        buffer += data
        end = buffer.find(_END, start)
        if end >= 0:
            self.leftover = bytes(buffer[end + len(_END) :])
            self.done = True
            region = buffer[: end + 2]
            self._buffer = bytearray()
            return self._content(region)
        cut = len(buffer) - len(_END) + 1  # an end straddling chunks stays whole
        if self.problem is None and cut > 0:
            kept = len(buffer[:cut].rstrip(_HELD))
            if cut - kept > self.line_limit:
                # CRs and NULs with no CRLF among them: one line, too long (aiosmtpd's
                # answer too), and nothing to hold back for: never an unbounded hold.
                self.problem = Problem.TOO_LONG
            else:
                cut = kept
                if cut >= 2 and buffer[cut - 2 : cut] == _CRLF:
                    cut -= 2  # a CRLF and the dot that may follow it go together
        if cut <= (2 if self._first else 0):
            return b""
        region = buffer[:cut]
        del buffer[:cut]
        return self._content(region)

    def _content(self, region: bytearray) -> bytes:
        first, self._first = self._first, False
        self.size += len(region) - (2 if first else 0)
        if self.problem is not None:
            return b""
        if self.size_limit and self.size > self.size_limit:
            self.problem = Problem.TOO_BIG
            return b""
        if self._line + len(region) > self.line_limit and self._too_long(region):
            self.problem = Problem.TOO_LONG
            return b""
        last = region.rfind(_CRLF)
        self._line = len(region) - last - 2 if last >= 0 else self._line + len(region)
        content = bytes(region).replace(b"\r\n.", _CRLF)
        return content[2:] if first else content

    def _too_long(self, region: bytearray) -> bool:
        """A line over the limit, CRLF included, the one under way counted whole
        (bytes.split: no Python loop over lines)."""
        lines = region.split(_CRLF)
        ended = lines[:-1] if len(lines) > 1 else []
        longest = max(map(len, ended), default=0)
        if ended:
            longest = max(longest, self._line + len(lines[0]))
        carried = (self._line if len(lines) == 1 else 0) + len(lines[-1])
        return max(longest + 2, carried) > self.line_limit


def unread(reader: asyncio.StreamReader, data: bytes) -> None:
    """Give back what was read past the end of data. StreamReader has no unread: its
    buffer is a bytearray (asyncio/streams.py, CPython 3.11 and later), read from the
    front, so what goes back goes in front of whatever came after it."""
    reader._buffer[:0] = data  # type: ignore[attr-defined]


def data_is_next(reader: asyncio.StreamReader) -> bool:
    """Whether the client's next command, already read ahead, is DATA: it pipelined
    (RFC 2920), so the backend can have DATA with the last RCPT, in the same write."""
    return reader._buffer[:6].upper() == b"DATA\r\n"  # type: ignore[attr-defined]
