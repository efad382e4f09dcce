"""Clients that hang up mid-session: normal SMTP life, never an error in the log."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.faults.live import live_gateway

STAGES = ("greeting", "ehlo", "mail", "rcpt", "data", "data-partial-line", "pipelined")


async def hang_up(live, stage: str, how: str) -> None:
    client = await live.client("127.0.0.2")
    if stage == "pipelined":
        await client.send(b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\n")
    elif stage != "greeting":
        await client.ehlo()
        if stage != "ehlo":
            await client.cmd("MAIL FROM:<alice@example.org>")
        if stage not in ("ehlo", "mail"):
            await client.cmd("RCPT TO:<bob@example.com>")
        if stage.startswith("data"):
            await client.cmd("DATA")
            await client.send(b"Subject: half\r\n\r\nhalf a mess")
            if stage == "data":
                await client.send(b"\r\n")
    sock = client.writer.get_extra_info("socket")
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif how == "half-close":
        sock.shutdown(socket.SHUT_WR)
    await client.close()


@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
async def test_a_client_dropping_without_quit_is_no_error(tmp_path, how) -> None:
    async with live_gateway(tmp_path) as live:
        for _ in range(3):
            for stage in STAGES:
                await hang_up(live, stage, how)
        await live.sessions_settle()
        assert live.backend.messages == []
        assert live.problems() == []
