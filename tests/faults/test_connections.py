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


LIMITED = (
    "[limits]\nmax_connections = 40\nmax_connections_per_client = 8\ncommand_timeout = 30\n"
    "junk_commands = 20\nstress_threshold = 0.75\nstress_command_timeout = 1\n"
    "stress_junk_commands = 3\n"
)


async def open_idle(live, sources: list[str], each: int) -> list:
    clients = []
    for source in sources:
        for _ in range(each):
            clients.append(await live.client(source))
    return clients


async def test_an_idle_flood_is_cut_short_under_stress(tmp_path) -> None:
    async with live_gateway(tmp_path, extra=LIMITED) as live:
        # 32 idle connections from 4 addresses (8 each, the per-client limit): 80% of 40.
        sources = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
        started = time.monotonic()
        idle = await open_idle(live, sources, 8)
        assert all(c.greeting.code == 220 for c in idle)
        # Under stress their 30 s command timeout is 1 s: they are told and let go.
        for client in idle:
            reply = await client.read_reply(timeout=10)
            assert reply.code == 421 and "timeout" in reply.text
            await client.close()
        assert time.monotonic() - started < 10
        await live.sessions_settle()
        assert await served(live)
        assert await live.metric("onajimi_limit_refusals_total", limit="command_timeout") >= 32
        said = [line for line in live.lines if "under stress" in line or "stress over" in line]
        assert len(said) >= 2 and "under stress" in said[0]
        assert live.problems() == []


async def test_slowloris_and_noop_keepers_lose_their_slots(tmp_path) -> None:
    async with live_gateway(
        tmp_path, extra=LIMITED.replace("command_timeout = 30", "command_timeout = 2")
    ) as live:
        slow = await live.client("127.0.0.3")
        await slow.send(b"EHLO sl")  # ...and never the end of the line
        noop = await live.client("127.0.0.4")
        await noop.ehlo()
        codes = []
        for _ in range(30):  # a NOOP keeper: never times out, never makes progress
            reply = await noop.cmd("NOOP")
            codes.append(reply.code)
            if reply.code == 421:
                break
        assert codes[:20] == [250] * 20 and codes[-1] == 421 and len(codes) == 21
        assert await noop.closed()
        for _ in range(4):  # the slowloris trickles a byte at a time, past its deadline
            await asyncio.sleep(0.6)
            try:
                await slow.send(b"o")
            except ConnectionError:
                break
        assert (await slow.read_reply(timeout=5)).code == 421
        await live.sessions_settle()
        assert await live.metric("onajimi_limit_refusals_total", limit="junk_commands") == 1
        assert await served(live)
        # A client that makes progress is never junk: RSET between many transactions.
        client = await live.client("127.0.0.2")
        await client.ehlo()
        for _ in range(30):
            assert (await client.cmd("MAIL FROM:<a@example.org>")).code == 250
            assert (await client.cmd("RSET")).code == 250
        await client.close()
        assert live.problems() == []


async def test_connection_limits_are_counted(tmp_path) -> None:
    async with live_gateway(tmp_path, extra=LIMITED) as live:
        held = await open_idle(live, ["127.0.0.3"], 8)
        ninth = await live.client("127.0.0.3")
        assert ninth.greeting.code == 421 and "from your address" in ninth.greeting.text
        await ninth.close()
        for client in held:
            await client.close()
        await live.sessions_settle()
        assert await live.metric("onajimi_limit_refusals_total", limit="client_connections") == 1
