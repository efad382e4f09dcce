"""Idle backend connections kept for the next client session (`backend.reuse`).

Only with XFORWARD or no forwarding at all: XCLIENT makes a connection one client's for
good (Postfix 3.7 refuses a second XCLIENT on a connection: `550 5.7.0 Error:
insufficient authorization`), while XFORWARD is given per transaction. A connection
comes back only idle (relay/backend.py, `release`): no reply owed, not in DATA, no AUTH
ever tried on it. The newest idle connection is taken first, the least likely to have
been closed by the backend; each waits at most `reuse_idle` seconds, on one timer. One
that the backend closed or spoke on meanwhile is noticed by its reader and skipped; a
taken one is proven by RSET alone before use, and one that fails it gives way to a
fresh connection (BackendSession._from_pool).
"""

from __future__ import annotations

import asyncio

from gateway.relay.client import ReplyReader


class BackendPool:
    """One per worker process, shared by its sessions."""

    def __init__(self, idle_seconds: float, size: int) -> None:
        self.idle_seconds = idle_seconds
        self.size = size
        self._idle: list[tuple[ReplyReader, dict[str, str], asyncio.TimerHandle]] = []
        self.closed = False  # sessions of before a reload or the stop still give back

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> tuple[ReplyReader, dict[str, str]] | None:
        """An idle connection and its EHLO keywords, or None (open a new one)."""
        while self._idle:
            link, extensions, timer = self._idle.pop()
            timer.cancel()
            if link.idle:  # not closed meanwhile, and no word while idle (a 421, say)
                return link, extensions
            link.fail(ConnectionError("closed while idle"))
        return None

    def give(self, link: ReplyReader, extensions: dict[str, str]) -> None:
        """A clean connection back, kept `idle_seconds` at most; QUIT when full or closed.
        One with anything in flight is dropped: its replies would answer the next client."""
        if not link.idle:
            link.fail(ConnectionError("given back with a reply in flight"))
            return
        if self.closed or len(self._idle) >= self.size:
            link.quit()
            return
        timer = link.loop.call_later(self.idle_seconds, self._expire, link)
        self._idle.append((link, extensions, timer))

    def _expire(self, link: ReplyReader) -> None:
        for n, (kept, _, _) in enumerate(self._idle):
            if kept is link:
                del self._idle[n]
                link.quit()
                return

    def close(self) -> None:
        """Shutdown or a new backend configuration: QUIT every idle connection."""
        self.closed = True
        idle, self._idle = self._idle, []
        for link, _, timer in idle:
            timer.cancel()
            link.quit()
