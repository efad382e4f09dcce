"""Connections that say nothing, say it slowly, or stay: every slot comes back.

Port scanners, load-balancer health checks and `nc -z` connect and close all day; bots
hold connections open. After each of these the gateway must be back to zero sessions,
serve a normal client, and stop at once on SIGTERM.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from tests.faults.live import live_gateway

MESSAGE = b"Subject: still served\r\n\r\nHello.\r\n"


async def served(live) -> bool:
    client = await live.client("127.0.0.2")  # mail.example.org: clean, passes at once
    await client.ehlo()
    replies = await client.send_mail("alice@example.org", ["bob@example.com"], MESSAGE)
    await client.close()
    return [r.code for r in replies] == [250, 250, 250]


def connect_and_close(port: int, count: int, *, reset: bool = False) -> None:
    for _ in range(count):
        with socket.socket() as sock:
            if reset:  # RST instead of FIN, as a half-open scan ends
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.connect(("127.0.0.1", port))


async def test_connect_and_close_leaves_no_session_behind(tmp_path) -> None:
    async with live_gateway(tmp_path) as live:
        await asyncio.to_thread(connect_and_close, live.port, 300)
        await asyncio.to_thread(connect_and_close, live.port, 100, reset=True)
        await live.sessions_settle()
        assert await live.metric("onajimi_connections_total") >= 400
        assert await served(live)
        await live.sessions_settle()
        started = time.monotonic()
        assert await live.stop() == 0
        assert time.monotonic() - started < 5  # no grace period waited for ghosts
        stopping = [line for line in live.lines if "stopping" in line]
        assert stopping and "0 sessions" in stopping[0]
        assert live.problems() == []
