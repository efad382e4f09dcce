"""The SMTP client end of a backend connection: replies taken in the order they come.

A group of commands goes out in one write and its replies are read one by one after
(RFC 2920 pipelining): the reader keeps every complete reply that arrives, however many
come in one segment, until it is asked for. aiosmtplib cannot do this: its protocol
holds one parsed reply at a time and drops whatever arrives while that one waits to be
picked up (aiosmtplib 5.1 `protocol.py`, `data_received`), so the replies to a pipelined
group are lost. It also runs every command through a lock and `asyncio.wait_for`,
which cost more than the rest of the relay's client side together (measured: issue 13).

Everything that can go wrong on the connection (the backend hangs up, a reply does not
come in time, a reply that is not SMTP) breaks it for good: the error is kept, every
later wait raises it, and the socket is dropped at once, so that a late reply can never
be taken for the answer to a later command.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from gateway.relay.reply import BackendReply

MAX_LINE = 4096  # a reply line (RFC 5321 allows 512) from a backend gone wrong
MAX_LINES = 1000  # lines of one reply (an EHLO has a dozen)
_SEPARATORS = (b" ", b"-", b"\r", b"")  # after the code: more text, more lines, or none


class BackendGone(ConnectionError):
    """The backend closed the connection, or it broke."""


class MalformedReply(ValueError):
    """Bytes from the backend that are not an SMTP reply."""


class ReplyReader(asyncio.Protocol):
    """The backend connection's protocol: writes, flow control, replies in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.error: Exception | None = None  # set once: the connection is unusable
        self.replies: deque[BackendReply] = deque()
        self.owed = 1  # replies not yet taken: the greeting, then one per command written
        self._buffer = b""
        self._lines: list[bytes] = []  # the reply being read
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._cut_off: asyncio.TimerHandle | None = None  # after QUIT

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        lines = (self._buffer + data if self._buffer else data).split(b"\n")
        self._buffer = lines.pop()  # what follows the last line end: the next line's start
        for line in lines:
            if not self._line(line):
                return
        if len(self._buffer) > MAX_LINE:
            self.fail(MalformedReply("a reply line from the backend is too long"))
            return
        waiter = self._waiter
        if self.replies and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._cut_off is not None:
            self._cut_off.cancel()
        self.fail(BackendGone(f"the backend closed the connection{f': {exc}' if exc else ''}"))

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- replies --------------------------------------------------------------------------
    def _line(self, line: bytes) -> bool:
        separator = line[3:4]
        if not line[:3].isdigit() or separator not in _SEPARATORS or len(line) > MAX_LINE:
            shown = line[:80].decode("ascii", "backslashreplace")
            self.fail(MalformedReply(f"not an SMTP reply from the backend: {shown!r}"))
            return False
        lines = self._lines
        lines.append(line[4:].strip(b" \t\r"))
        if separator == b"-":
            if len(lines) > MAX_LINES:
                self.fail(MalformedReply("a reply from the backend has too many lines"))
                return False
            return True
        text = b"\n".join(lines) if len(lines) > 1 else lines[0]
        self.replies.append(BackendReply(int(line[:3]), text.decode("utf-8", "surrogateescape")))
        self._lines = []
        return True

    async def reply(self, timeout: float) -> BackendReply:
        """The next reply, waiting at most `timeout` seconds for it."""
        if not self.replies:
            if self.error is not None:
                raise self.error
            waiter = self._waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._timed_out, timeout)
            try:
                await waiter
            finally:
                timer.cancel()
                if self._waiter is waiter:
                    self._waiter = None
        self.owed -= 1
        return self.replies.popleft()

    def _timed_out(self, timeout: float) -> None:
        self.fail(TimeoutError(f"no reply from the backend within {timeout:g} s"))

    def fail(self, error: Exception) -> None:
        """Break the connection for good: `error` for every wait from now on. Replies
        already read can still be taken (they came before the break)."""
        if self.error is None:
            self.error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            if self.replies:
                waiter.set_result(None)
            else:
                waiter.set_exception(self.error)
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(self.error)
        if self.transport is not None:
            self.transport.abort()

    # -- writing --------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        return self.error is None and self.transport is not None

    @property
    def idle(self) -> bool:
        """Usable, and nothing in flight: every reply owed taken, nothing more said.
        Only such a connection may serve another client (relay/pool.py)."""
        return (
            self.usable
            and self.owed == 0
            and not self.replies
            and not self._buffer
            and not self._lines
        )

    def write(self, data: bytes, replies: int = 0) -> None:
        """Bytes as they are (message content); `replies`: how many they are owed."""
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)
        self.owed += replies

    def send(self, *commands: bytes) -> None:
        """Commands (without their CRLF) in one write: one command, or a pipelined group."""
        self.write(b"\r\n".join(commands) + b"\r\n", len(commands))

    async def command(self, command: bytes, timeout: float) -> BackendReply:
        self.send(command)
        return await self.reply(timeout)

    async def drain(self) -> None:
        """Wait while the backend reads slower than we write (asyncio's flow control)."""
        if self.error is not None:
            raise self.error
        if self._paused:
            drained = self._drained = self.loop.create_future()
            await drained

    def quit(self, grace: float = 10.0) -> None:
        """QUIT, without waiting for the answer: nobody needs it. The backend closes after
        its 221; one that does not is cut off after `grace` seconds."""
        if not self.usable:
            return
        self.send(b"QUIT")
        self.error = BackendGone("QUIT was sent")
        self._cut_off = self.loop.call_later(grace, self.fail, self.error)


async def open_connection(
    host: str, port: int, context: ssl.SSLContext | None, timeout: float
) -> ReplyReader:
    """A TCP (or TLS, with `context`) connection to the backend; the greeting is not read."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, reader = await loop.create_connection(lambda: ReplyReader(loop), host, port, ssl=context)
    return reader


async def start_tls(
    reader: ReplyReader, context: ssl.SSLContext, host: str, timeout: float
) -> None:
    """The TLS handshake after the backend's 220 to STARTTLS, on the same protocol."""
    assert reader.transport is not None
    async with asyncio.timeout(timeout):
        reader.transport = await reader.loop.start_tls(  # type: ignore[assignment]
            reader.transport, reader, context, server_hostname=host
        )


_KNOWN_EHLOS: dict[str, dict[str, str]] = {}  # a backend says the same EHLO every time


def extensions_of(ehlo: BackendReply) -> dict[str, str]:
    """The EHLO keywords (lower case) and their parameters; the first line is the name.
    The old `AUTH=` form (Postfix's broken_sasl_auth_clients) counts as AUTH. The same
    text gives the same (shared, never changed) dict: two EHLOs per connection."""
    known = _KNOWN_EHLOS.get(ehlo.text)
    if known is not None:
        return known
    extensions: dict[str, str] = {}
    for line in ehlo.text.split("\n")[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        keyword = keyword.lower()
        if keyword.startswith("auth="):
            extensions.setdefault("auth", line.strip()[5:])
        elif keyword:
            extensions[keyword] = parameters.strip()
    if len(_KNOWN_EHLOS) >= 16:
        _KNOWN_EHLOS.clear()
    _KNOWN_EHLOS[ehlo.text] = extensions
    return extensions
