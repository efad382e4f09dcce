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
        self._buffer = b""
        self._lines: list[str] = []  # the reply being read
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._cut_off: asyncio.TimerHandle | None = None  # after QUIT

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if not self._line(buffer[start:end]):
                return
            start = end + 1
        self._buffer = buffer[start:]
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
        if line.endswith(b"\r"):
            line = line[:-1]
        code, separator = line[:3], line[3:4]
        if len(line) > MAX_LINE or not code.isdigit() or separator not in (b"", b" ", b"-"):
            shown = line[:80].decode("ascii", "backslashreplace")
            self.fail(MalformedReply(f"not an SMTP reply from the backend: {shown!r}"))
            return False
        lines = self._lines
        lines.append(line[4:].strip(b" \t").decode("utf-8", "surrogateescape"))
        if separator == b"-":
            if len(lines) > MAX_LINES:
                self.fail(MalformedReply("a reply from the backend has too many lines"))
                return False
            return True
        self.replies.append(BackendReply(int(code), "\n".join(lines)))
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
                self._waiter = None
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

    def write(self, data: bytes) -> None:
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)

    def send(self, *commands: bytes) -> None:
        """Commands (without their CRLF) in one write: one command, or a pipelined group."""
        self.write(b"\r\n".join(commands) + b"\r\n")

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


def extensions_of(ehlo: BackendReply) -> dict[str, str]:
    """The EHLO keywords (lower case) and their parameters; the first line is the name.
    The old `AUTH=` form (Postfix's broken_sasl_auth_clients) counts as AUTH."""
    extensions: dict[str, str] = {}
    for line in ehlo.text.split("\n")[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        keyword = keyword.lower()
        if keyword.startswith("auth="):
            extensions.setdefault("auth", line.strip()[5:])
        elif keyword:
            extensions[keyword] = parameters.strip()
    return extensions
