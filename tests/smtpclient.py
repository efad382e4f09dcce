"""A raw SMTP client for tests: exact bytes out, exact replies in.

It can bind a 127.0.0.x source address (distinct clients on loopback), send a PROXY
header first, pipeline commands, and send malformed input on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from dataclasses import dataclass


@dataclass
class Reply:
    code: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ClosedError(ConnectionError):
    pass


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting: Reply | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        host: str = "127.0.0.1",
        *,
        source: str | None = None,
        proxy: bytes | None = None,
        greet: bool = True,
        timeout: float = 10.0,
    ) -> Client:
        local = (source, 0) if source else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local, limit=1 << 20), timeout
        )
        client = cls(reader, writer)
        if proxy is not None:
            writer.write(proxy)
        if greet:
            client.greeting = await client.read_reply(timeout)
        return client

    async def read_reply(self, timeout: float = 10.0) -> Reply:
        lines: list[str] = []
        code = 0
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), timeout)
            if not raw:
                raise ClosedError(f"connection closed after {lines!r}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            code = int(line[:3])
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(code, lines)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def cmd(self, line: str | bytes, timeout: float = 10.0) -> Reply:
        data = line.encode() if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.read_reply(timeout)

    async def ehlo(self, name: str = "client.example") -> Reply:
        return await self.cmd(f"EHLO {name}")

    async def data(self, content: bytes, timeout: float = 15.0) -> Reply:
        """DATA, then `content` dot-stuffed and terminated; returns the final reply."""
        start = await self.cmd("DATA")
        if start.code != 354:
            return start
        stuffed = b"\r\n".join(
            b"." + line if line.startswith(b".") else line for line in content.split(b"\r\n")
        )
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        await self.send(stuffed + b".\r\n")
        return await self.read_reply(timeout)

    async def start_data(
        self, sender: str = "alice@sender.example", rcpt: str = "bob@example.com"
    ) -> Reply:
        """EHLO, MAIL, RCPT, DATA: returns the DATA reply; raw content may follow."""
        await self.ehlo()
        await self.cmd(f"MAIL FROM:<{sender}>")
        await self.cmd(f"RCPT TO:<{rcpt}>")
        return await self.cmd("DATA")

    async def send_mail(self, sender: str, recipients: list[str], content: bytes) -> list[Reply]:
        replies = [await self.cmd(f"MAIL FROM:<{sender}>")]
        for rcpt in recipients:
            replies.append(await self.cmd(f"RCPT TO:<{rcpt}>"))
        replies.append(await self.data(content))
        return replies

    async def starttls(self) -> Reply:
        """STARTTLS, then the TLS handshake on this connection (certificate not checked)."""
        import ssl

        reply = await self.cmd("STARTTLS")
        if reply.code == 220:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            await self.writer.start_tls(context)
        return reply

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server has closed the connection (EOF)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (TimeoutError, ConnectionError):
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def proxy_v1(
    source: str, destination: str = "198.51.100.1", sport: int = 40000, dport: int = 25
) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {family} {source} {destination} {sport} {dport}\r\n".encode()


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(
    source: str, destination: str = "198.51.100.1", sport: int = 40000, dport: int = 25
) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    if src.version == 4:
        family, body = 0x11, src.packed + dst.packed + struct.pack("!HH", sport, dport)
    else:
        family, body = 0x21, src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body
