"""relay/client.py: replies read in order however the bytes arrive, and a connection
that breaks stays broken (a late reply must never answer a later command)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.relay.client import BackendGone, MalformedReply, ReplyReader, extensions_of
from gateway.relay.reply import BackendReply

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

GROUP = (
    b"250-backend.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
    b"250 2.1.0 Ok\r\n"
    b"550 5.1.1 <x@example.com>: Recipient address rejected:\r\n"
)
EXPECTED = [
    BackendReply(250, "backend.test\nPIPELINING\nSIZE 1000"),
    BackendReply(250, "2.1.0 Ok"),
    BackendReply(550, "5.1.1 <x@example.com>: Recipient address rejected:"),
]


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def reader() -> tuple[ReplyReader, Transport]:
    transport = Transport()
    protocol = ReplyReader(asyncio.get_running_loop())
    protocol.connection_made(transport)
    return protocol, transport


async def test_replies_split_at_every_offset_come_out_whole_and_in_order() -> None:
    for cut in range(len(GROUP) + 1):
        protocol, _ = reader()
        protocol.data_received(GROUP[:cut])
        protocol.data_received(GROUP[cut:])
        assert [await protocol.reply(1) for _ in EXPECTED] == EXPECTED, cut


async def test_byte_by_byte_with_bare_lf_line_ends() -> None:
    protocol, _ = reader()
    for byte in GROUP.replace(b"\r\n", b"\n"):
        protocol.data_received(bytes([byte]))
    assert [await protocol.reply(1) for _ in EXPECTED] == EXPECTED


async def test_a_reply_that_comes_later_wakes_the_waiter() -> None:
    protocol, transport = reader()
    protocol.send(b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@example.com>")
    assert transport.written == b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.com>\r\n"
    waiting = asyncio.ensure_future(protocol.reply(1))
    await asyncio.sleep(0)
    protocol.data_received(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
    assert await waiting == BackendReply(250, "2.1.0 Ok")
    assert await protocol.reply(1) == BackendReply(250, "2.1.5 Ok")


async def test_a_timeout_breaks_the_connection_for_good() -> None:
    protocol, transport = reader()
    with pytest.raises(TimeoutError):
        await protocol.reply(0.05)
    assert transport.aborted and not protocol.usable
    protocol.data_received(b"250 2.0.0 Ok\r\n")  # too late: never taken for a later reply
    with pytest.raises(TimeoutError):
        protocol.send(b"RSET")


async def test_malformed_reply_breaks_the_connection() -> None:
    protocol, transport = reader()
    protocol.data_received(b"250 fine\r\nHTTP/1.1 400 Bad Request\r\n")
    assert await protocol.reply(1) == BackendReply(250, "fine")  # came before the break
    with pytest.raises(MalformedReply):
        await protocol.reply(1)
    assert transport.aborted


async def test_a_reply_line_without_end_is_bounded() -> None:
    protocol, transport = reader()
    protocol.data_received(b"250 " + b"x" * 10_000)
    with pytest.raises(MalformedReply):
        await protocol.reply(1)
    assert transport.aborted


async def test_a_hang_up_ends_the_wait_with_the_replies_before_it_kept() -> None:
    protocol, _ = reader()
    protocol.data_received(b"421 4.3.0 backend.test closing\r\n")
    protocol.connection_lost(None)
    assert await protocol.reply(1) == BackendReply(421, "4.3.0 backend.test closing")
    with pytest.raises(BackendGone):
        await protocol.reply(1)


async def test_quit_does_not_wait_and_leaves_the_connection_unusable() -> None:
    protocol, transport = reader()
    protocol.quit(grace=0.05)
    assert transport.written == b"QUIT\r\n" and not protocol.usable
    await asyncio.sleep(0.1)
    assert transport.aborted  # the backend never closed: cut off


def test_ehlo_keywords_lower_case_with_the_old_auth_form() -> None:
    ehlo = BackendReply(
        250, "backend.test\nPIPELINING\nAUTH PLAIN LOGIN\nAUTH=PLAIN LOGIN\nXFORWARD NAME ADDR"
    )
    assert extensions_of(ehlo) == {
        "pipelining": "",
        "auth": "PLAIN LOGIN",
        "xforward": "NAME ADDR",
    }


def test_xtext_plain_values_go_through_and_the_rest_is_encoded() -> None:
    from gateway.relay.xtext import xtext

    for code in range(0x100):
        char = chr(code)
        plain = 33 <= code <= 126 and char not in "+="
        expected = char if plain else "".join(f"+{b:02X}" for b in char.encode("utf-8"))
        assert xtext(f"a{char}b") == f"a{expected}b", code
    assert xtext("mail.example.org") == "mail.example.org"
    assert xtext("two words+=") == "two+20words+2B+3D"


async def test_the_pool_lends_only_idle_connections_and_none_after_close() -> None:
    from gateway.relay.pool import BackendPool

    pool = BackendPool(idle_seconds=5, size=2)
    busy, _ = reader()
    busy.data_received(b"220 greeting\r\n")
    await busy.reply(1)
    busy.send(b"RSET")  # its answer is still owed
    pool.give(busy, {})
    assert len(pool) == 0 and not busy.usable
    idle, transport = reader()
    idle.data_received(b"220 greeting\r\n")
    await idle.reply(1)
    pool.give(idle, {"pipelining": ""})
    assert pool.take() == (idle, {"pipelining": ""}) and pool.take() is None
    pool.close()
    pool.give(idle, {})  # a session that began before a reload gives back
    assert len(pool) == 0 and transport.written == b"QUIT\r\n"
