"""The backend misbehaves in every way at every stage: the client never hears a 250 the
backend did not give, never an invalid reply line, and the gateway logs no traceback.

A few hundred trials, drawn from a fixed seed (FAULT_SEED overrides it to explore), each
one client transaction against one fault: refused connections, a backend that never
greets, 4xx/5xx/421 at every stage, drops after 354 and after the final dot, replies
malformed, multi-line and inconsistent, or too late.
"""

from __future__ import annotations

import asyncio
import os
import random
import re

from tests.faults.live import live_gateway

SEED = int(os.environ.get("FAULT_SEED", "20261201"))
TRIALS = 300

STAGES = ["CONNECT", "XCLIENT", "MAIL", "RCPT", "DATA", "DATA_END"]
FAULTS = [
    "hang",
    "drop",
    "refused",  # the backend is not listening at all
    "then-drop:354 go ahead",
    "then-drop:250 2.0.0 Ok: queued as DROPPED",
    "then-drop:451 4.3.0 Try later",
    "421 4.3.2 Shutting down",
    "450 4.2.0 Mailbox busy",
    "452 4.3.1 Insufficient system storage",
    "550 5.1.1 No such user",
    "554 5.7.1 Rejected",
    "552 5.3.4 Message too big",
    "25O 2.0.0 Ok: queued",  # the malformed reply
    "2500 too many digits",
    "250",
    "",
    "abc def",
    "999 not a code",
    "354 at the wrong time",
    "199 too low",
    "250-first line\r\n550 second line with another code",
    "250-unterminated continuation",
    "550-first\r\n550-second\r\n550 third",
    "250 2.0.0 Ok: queued\rwith a stray CR",
    "250 2.0.0 Ok\x00 with a NUL",
    "late:0.2:250 2.0.0 Ok: queued a bit late",
    "late:3:250 2.0.0 Ok: queued too late",
    "late:0.2:451 4.3.0 late refusal",
]
VALID_LINE = re.compile(rb"[2-5][0-5][0-9](?:[ -][\t\x20-\x7e\x80-\xff]*)?\r\n")
MESSAGE = b"Subject: trial\r\nMessage-ID: <%d@trial.example>\r\n\r\nBody of trial %d.\r\n"


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, list[bytes]]:
    """One reply, every line checked against RFC 5321's grammar; (code, lines)."""
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 15)
        assert line, f"connection closed after {lines!r}"
        assert VALID_LINE.fullmatch(line), f"invalid reply line {line!r} after {lines!r}"
        assert not lines or line[:3] == lines[0][:3], f"codes differ in {[*lines, line]!r}"
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), lines


async def transaction(live, trial: int) -> tuple[list[int], bool]:
    """EHLO, MAIL, RCPT, DATA as far as the replies allow; the codes, and whether the
    client was told 250 at the end of DATA."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", live.port, local_addr=("127.0.0.2", 0)
    )
    codes = []
    try:
        codes.append((await read_reply(reader))[0])
        for command in (b"EHLO x.example", b"MAIL FROM:<a@x.example>", b"RCPT TO:<b@example.com>"):
            writer.write(command + b"\r\n")
            code, _ = await read_reply(reader)
            codes.append(code)
            if code >= 400:
                return codes, False
        writer.write(b"DATA\r\n")
        code, _ = await read_reply(reader)
        codes.append(code)
        if code != 354:
            return codes, False
        writer.write(MESSAGE % (trial, trial) + b".\r\n")
        code, _ = await read_reply(reader)
        codes.append(code)
        return codes, code == 250
    finally:
        writer.close()


async def test_random_backend_faults_never_give_a_false_250(tmp_path) -> None:
    rng = random.Random(SEED)
    async with live_gateway(
        tmp_path, backend_extra="connect_timeout = 0.5\ncommand_timeout = 1"
    ) as live:
        backend, port = live.backend, live.backend.port
        false_250s, told = [], 0
        for trial in range(TRIALS):
            stage, fault = rng.choice(STAGES), rng.choice(FAULTS)
            if fault == "refused":
                await backend.stop()
            else:
                backend.faults = {stage: fault}
            accepted_before = {m.data for m in backend.accepted}
            try:
                codes, delivered = await transaction(live, trial)
            finally:
                backend.faults = {}
                if fault == "refused":
                    await backend.start(port)
            if delivered:
                told += 1
                mine = f"Message-ID: <{trial}@trial.example>".encode()
                backend_said_2xx = any(
                    mine in m.data for m in backend.accepted if m.data not in accepted_before
                )
                if not backend_said_2xx:
                    false_250s.append((trial, stage, fault, codes))
        assert false_250s == [], "\n".join(map(str, false_250s))
        assert told > 0  # some trials do deliver: the check above is not vacuous
        await live.sessions_settle()
        assert live.process.returncode is None  # still running
        assert live.problems() == []
        # ...and after all that, a normal message still goes through.
        codes, delivered = await transaction(live, TRIALS)
        assert delivered, codes
