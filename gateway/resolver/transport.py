"""DNS queries over long-lived UDP sockets (TCP when a reply is truncated).

dnspython's async resolver opens one UDP socket per query; a front door doing a PTR and
an A lookup for every new client would spend more time creating sockets than asking.
Here each nameserver gets one connected UDP socket carrying many queries at once,
matched to their replies by message id; messages are built and read by `wire`.

Spoofing defences, for a resolver that should normally talk to a local recursor: the
socket is connected (replies from elsewhere are dropped by the kernel), ids are random
(from the kernel's generator, fetched in blocks) and unique among queries in flight,
the reply's question must match, and the socket (and so its source port) is replaced
every `_ROTATE_AFTER` queries.
"""

from __future__ import annotations

import asyncio
import os
import struct

from gateway.resolver.wire import Reply, WireError, build_query, parse_reply

_ROTATE_AFTER = 20_000


class TransportError(Exception):
    """No usable reply from this server on this attempt (timeout, refused, garbage)."""


class _RandomIds:
    """Unpredictable 16-bit ids, 2,048 per os.urandom call instead of one call each."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> int:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(4096), 0
        value = (self._pool[self._at] << 8) | self._pool[self._at + 1]
        self._at += 2
        return value


_ids = _RandomIds()


class _UdpChannel(asyncio.DatagramProtocol):
    """One connected UDP socket to one server, many queries in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[asyncio.Future[Reply], str, int]] = {}
        self.sent = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        (msg_id,) = struct.unpack_from("!H", data)
        entry = self.waiting.get(msg_id)
        if entry is None:
            return
        future, qname, qtype = entry
        try:
            reply = parse_reply(data)
        except (WireError, struct.error, IndexError):
            return  # garbage or a spoof attempt: keep waiting for the real reply
        if reply.qname != qname or reply.qtype != qtype:
            return
        if not future.done():
            future.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: every query on this socket has failed.
        for future, _, _ in list(self.waiting.values()):
            if not future.done():
                future.set_exception(TransportError(f"network error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for future, _, _ in list(self.waiting.values()):
            if not future.done():
                future.set_exception(TransportError("socket closed"))

    def new_id(self) -> int:
        while True:
            msg_id = _ids.next()
            if msg_id not in self.waiting:
                return msg_id


class Nameserver:
    """Queries to one server: UDP on a shared socket, TCP fallback on truncation."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._channel: _UdpChannel | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Nameserver({self.host!r}, {self.port})"

    def _usable(self, channel: _UdpChannel | None) -> bool:
        return channel is not None and not channel.closed and channel.sent < _ROTATE_AFTER

    async def _udp(self) -> _UdpChannel:
        if self._usable(self._channel):
            return self._channel  # type: ignore[return-value]
        async with self._lock:
            if self._usable(self._channel):
                return self._channel  # type: ignore[return-value]
            loop = asyncio.get_running_loop()
            try:
                _, channel = await loop.create_datagram_endpoint(
                    _UdpChannel, remote_addr=(self.host, self.port)
                )
            except OSError as exc:
                raise TransportError(
                    f"cannot open a socket to {self.host}:{self.port}: {exc}"
                ) from None
            old, self._channel = self._channel, channel
            if old is not None:
                _close_when_drained(old)
            return channel

    async def query(self, name: str, qtype: int, timeout: float) -> Reply:
        """Ask one question; raises TransportError on timeout or network trouble.

        The timeout is a timer that fails the reply's future: asyncio.wait_for would add
        a second future, a callback and a partial to every query."""
        channel = self._channel
        if not self._usable(channel):
            channel = await self._udp()
        loop = asyncio.get_running_loop()
        qid = channel.new_id()
        qname = name.lower().rstrip(".")
        future: asyncio.Future[Reply] = loop.create_future()
        channel.waiting[qid] = (future, qname, qtype)
        channel.sent += 1
        wire = build_query(qid, qname, qtype)
        timer = loop.call_later(timeout, _time_out, future)
        try:
            channel.transport.sendto(wire)
            reply = await future
        finally:
            timer.cancel()
            channel.waiting.pop(qid, None)
        if reply.truncated:
            return await self._tcp(wire, qname, qtype, timeout)
        return reply

    async def _tcp(self, wire: bytes, qname: str, qtype: int, timeout: float) -> Reply:
        async def exchange() -> Reply:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = parse_reply(await reader.readexactly(length))
            finally:
                writer.close()
            if (
                reply.qid != struct.unpack_from("!H", wire)[0]
                or reply.qname != qname
                or reply.qtype != qtype
            ):
                raise TransportError("TCP reply does not answer the query")
            return reply

        try:
            return await asyncio.wait_for(exchange(), timeout)
        except TimeoutError:
            raise TransportError("timeout (TCP)") from None
        except (OSError, EOFError, asyncio.IncompleteReadError, WireError, struct.error) as exc:
            raise TransportError(f"TCP: {exc}") from None

    def close(self) -> None:
        if self._channel is not None and self._channel.transport is not None:
            self._channel.transport.close()
        self._channel = None


def _time_out(future: asyncio.Future[Reply]) -> None:
    if not future.done():
        future.set_exception(TransportError("timeout"))


def _close_when_drained(channel: _UdpChannel) -> None:
    """A rotated-out socket may still have replies coming: close it once they have arrived."""
    loop = asyncio.get_running_loop()

    def check() -> None:
        if channel.waiting and not channel.closed:
            loop.call_later(0.5, check)
        elif channel.transport is not None:
            channel.transport.close()

    check()
