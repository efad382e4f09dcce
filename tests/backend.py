"""A fault-injecting SMTP backend for tests: records everything, misbehaves on request.

Its DATA reader is deliberately *lenient*, like the MTAs SMTP smuggling exploits: it
also ends a message at `\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n` and `\\r\\n.\\n` (and, with
`drop_nul`, drops NUL bytes first), and whatever follows is read as new commands. If the
gateway ever let a smuggling vector through, this backend would record a second message.

    backend = FakeBackend()
    await backend.start()
    backend.refuse["x@example.com"] = "550 5.1.1 <x@example.com>: User unknown"
    backend.faults["DATA_END"] = "drop"
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

_ENDS = re.compile(rb"(\r\n|\n|\r)\.(\r\n|\n|\r)")


@dataclass
class Message:
    sender: str
    recipients: list[str]
    data: bytes  # dot-unstuffed content, exactly as received otherwise
    xclient: dict[str, str] = field(default_factory=dict)
    xforward: dict[str, str] = field(default_factory=dict)
    helo: str = ""


class _Session(asyncio.Protocol):
    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend
        self.buffer = b""
        self.in_data = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.xclient: dict[str, str] = {}
        self.xforward: dict[str, str] = {}
        self.helo = ""
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections += 1
        self.backend.sessions.append(self)
        if self._fault("CONNECT"):
            return
        self.reply("220 backend.test ESMTP fake")

    def reply(self, text: str) -> None:
        if not self.transport.is_closing():
            self.transport.write(text.encode() + b"\r\n")

    def _fault(self, stage: str) -> bool:
        """Apply a configured fault at `stage`; True when the normal reply must not follow.

        Faults: "hang" (say nothing more), "drop" (close), "then-drop:REPLY" (reply, then
        close), "late:SECONDS:REPLY" (reply after a while), or reply lines to give instead
        of the normal one (malformed ones included: they are written as they are)."""
        fault = self.backend.faults.get(stage)
        if fault is None:
            return False
        if fault == "hang":
            self.hung = True
            return True
        if fault == "drop":
            self.transport.close()
            return True
        if fault.startswith("then-drop:"):
            self.reply(fault[len("then-drop:") :])
            self.transport.close()
            return True
        if fault.startswith("late:"):
            _, seconds, reply = fault.split(":", 2)
            self.hung = True  # nothing else is answered meanwhile
            asyncio.get_running_loop().call_later(float(seconds), self._late, reply)
            return True
        self.reply(fault)  # a reply line to give instead of the normal one
        return True

    def _late(self, reply: str) -> None:
        self.hung = False
        self.reply(reply)
        self.data_received(b"")  # what came meanwhile

    def data_received(self, data: bytes) -> None:
        if self.backend.drop_nul:  # as some MTAs do: a NUL next to a dot ends data then
            data = data.replace(b"\x00", b"")
        self.buffer += data
        self.backend.groups.append([])  # the commands that came in this one read
        if self.hung:
            return
        while self.buffer and not self.hung and not self.transport.is_closing():
            if self.in_data:
                match = _ENDS.search(b"\r\n" + self.buffer)
                if match is None:
                    return
                # Offsets in the prefixed text are 2 ahead of the buffer's.
                start, end = max(0, match.start() - 2), match.end() - 2
                content, self.buffer = self.buffer[:start], self.buffer[end:]
                self.in_data = False
                self._message(content)
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                return
            self.buffer = rest
            self._command(line.decode("utf-8", "surrogateescape"))

    def _message(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
        if raw:
            content += b"\r\n"
        message = Message(
            self.sender or "",
            list(self.recipients),
            content,
            dict(self.xclient),
            dict(self.xforward),
            self.helo,
        )
        fault = self.backend.faults.get("DATA_END", "")
        if self._fault("DATA_END"):
            reply = fault.split(":", 2)[-1] if fault.startswith("late:") else fault
            if reply.removeprefix("then-drop:").startswith("2"):  # a fault that still accepts
                self.backend.accepted.append(message)
            self.sender, self.recipients = None, []
            return
        self.backend.accepted.append(message)
        self.backend.messages.append(message)
        self.sender, self.recipients = None, []
        self.reply(f"250 2.0.0 Ok: queued as Q{len(self.backend.messages)}")

    def _command(self, line: str) -> None:
        self.backend.commands.append(line)
        self.backend.groups[-1].append(line.split(" ", 1)[0].upper())
        verb = line.split(" ", 1)[0].upper()
        arg = line[len(verb) :].strip()
        if verb in ("EHLO", "HELO"):
            self.helo = arg
            if verb == "HELO":
                self.reply("250 backend.test")
                return
            lines = ["backend.test", *self.backend.extensions]
            for i, item in enumerate(lines):
                self.reply(f"250{'-' if i < len(lines) - 1 else ' '}{item}")
        elif verb == "XCLIENT":
            if self._fault("XCLIENT"):
                return
            self.xclient = dict(part.split("=", 1) for part in arg.split())
            self.reply("220 backend.test ESMTP fake")
        elif verb == "XFORWARD":
            if self._fault("XFORWARD"):
                return
            self.xforward.update(dict(part.split("=", 1) for part in arg.split()))
            self.reply("250 2.0.0 Ok")
        elif verb == "MAIL":
            if self._fault("MAIL"):
                return
            self.sender = arg.split(":", 1)[1].split(">", 1)[0].lstrip("<")
            self.backend.mail_parameters.append(arg.split(">", 1)[1].strip())
            self.reply("250 2.1.0 Ok")
        elif verb == "RCPT":
            recipient = arg.split(":", 1)[1].strip().strip("<>")
            refusal = self.backend.refuse.get(recipient)
            if refusal:
                self.reply(refusal)
                return
            if self._fault("RCPT"):
                return
            self.recipients.append(recipient)
            self.reply("250 2.1.5 Ok")
        elif verb == "DATA":
            if self._fault("DATA"):
                return
            self.in_data = True
            self.reply("354 End data with <CR><LF>.<CR><LF>")
        elif verb == "RSET":
            if self._fault("RSET"):
                return
            self.sender, self.recipients = None, []
            self.reply("250 2.0.0 Ok")
        elif verb == "QUIT":
            self.reply("221 2.0.0 Bye")
            self.transport.close()
        elif verb == "NOOP":
            self.reply("250 2.0.0 Ok")
        else:
            self.reply("502 5.5.2 Error: command not recognized")


class FakeBackend:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.extensions = [
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT",
        ]
        self.faults: dict[str, str] = {}  # stage -> "hang" | "drop" | a reply line
        self.drop_nul = False  # discard NUL bytes on input, as lenient MTAs do
        self.refuse: dict[str, str] = {}  # recipient -> reply line
        self.messages: list[Message] = []  # delivered with the normal 250
        self.accepted: list[Message] = []  # every message given a 2xx, faults included
        self.commands: list[str] = []
        # The verbs of the commands that came in each read: a pipelined group comes in one.
        self.groups: list[list[str]] = []
        self.mail_parameters: list[str] = []
        self.sessions: list[_Session] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, port: int = 0) -> FakeBackend:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Session(self), self.host, port or self.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused) and drop open sessions."""
        if self._server is not None:
            self._server.close()
            for session in self.sessions:
                session.transport.close()
            await self._server.wait_closed()
            self._server = None
