"""A fast SMTP sink for the benchmark: accepts everything, stores nothing.

`python -m bench.sink PORT` serves until killed. It speaks just enough SMTP for the
gateway and the load generator (EHLO with XCLIENT, MAIL, RCPT, DATA, RSET, QUIT),
counts messages, and stays cheap so that it is never the bottleneck being measured.
"""

from __future__ import annotations

import asyncio
import sys

EHLO = (
    b"250-sink.bench\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-XFORWARD NAME ADDR PROTO HELO\r\n"
    b"250 XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT\r\n"
)
REPLIES = {
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"RCPT": b"250 2.1.5 Ok\r\n",
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    b"RSET": b"250 2.0.0 Ok\r\n",
    b"NOOP": b"250 2.0.0 Ok\r\n",
    b"XCLIENT": b"220 sink.bench ESMTP\r\n",
    b"XFORWARD": b"250 2.0.0 Ok\r\n",
}


class Sink(asyncio.Protocol):
    messages = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.in_data = False
        transport.write(b"220 sink.bench ESMTP\r\n")  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out = []
        while True:
            if self.in_data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    # keep only what could still hold the terminator
                    buffer = buffer[-4:]
                    break
                buffer = buffer[end + 5 :]
                self.in_data = False
                Sink.messages += 1
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                break
            line, buffer = buffer[:line_end], buffer[line_end + 2 :]
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"HELO"):
                out.append(EHLO)
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(REPLIES.get(verb, b"502 5.5.2 Error\r\n"))
                if verb == b"DATA":
                    self.in_data = True
                    buffer = b"\r\n" + buffer  # the terminator may start right away
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve(int(sys.argv[1])))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(int(sys.argv[1])))
