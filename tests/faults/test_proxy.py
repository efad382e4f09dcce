"""PROXY headers a trusted balancer may send that are not "this TCP client": health
checks (LOCAL, UNSPEC, UNKNOWN) are the balancer itself; a UNIX socket or a TLV running
past the header is refused with one line, never an internal error."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from tests.faults.live import live_gateway
from tests.smtpclient import PROXY_V2_SIGNATURE, ClosedError

LISTEN = 'proxy_protocol = true\nproxy_trusted = ["127.0.0.0/8"]'


def v2(command: int, family: int, body: bytes) -> bytes:
    return (
        PROXY_V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body
    )


def tcp4(source: str, destination: str, tlvs: bytes = b"") -> bytes:
    addresses = ipaddress.ip_address(source).packed + ipaddress.ip_address(destination).packed
    return v2(1, 0x11, addresses + struct.pack("!HH", 40000, 25) + tlvs)


HEALTH_CHECKS = {
    "v2 LOCAL": v2(0, 0x00, b""),
    "v2 LOCAL with addresses": v2(0, 0x11, bytes(12)),
    "v2 PROXY UNSPEC": v2(1, 0x00, b""),
    "v1 UNKNOWN": b"PROXY UNKNOWN\r\n",
}
REFUSED = {
    "v2 AF_UNIX": v2(
        1, 0x31, b"/run/client.sock".ljust(108, b"\0") + b"/run/mx.sock".ljust(108, b"\0")
    ),
    "v2 TLV past the end": tcp4("192.0.2.25", "198.51.100.1", b"\x04\x00\x10abc"),
}


async def test_health_checks_are_the_balancer_and_bad_headers_are_refused(tmp_path) -> None:
    async with live_gateway(tmp_path, listen=LISTEN) as live:
        for name, header in HEALTH_CHECKS.items():
            client = await live.client("127.0.0.2", proxy=header)  # the balancer: mail.example.org
            assert client.greeting.code == 220, name
            await client.ehlo()
            replies = await client.send_mail("a@example.org", ["bob@example.com"], b"s\r\n")
            assert [r.code for r in replies] == [250, 250, 250], name
            assert live.backend.messages[-1].xclient["ADDR"] == "127.0.0.2", name
            await client.close()
        for name, header in REFUSED.items():
            try:
                client = await live.client("127.0.0.2", proxy=header)
            except ClosedError:
                pytest.fail(f"{name}: closed without a word")
            assert client.greeting.code == 421, name
            assert await client.closed(), name
        # A proper header with a well-formed TLV still works.
        client = await live.client(
            "127.0.0.2", proxy=tcp4("192.0.2.25", "198.51.100.1", b"\x04\x00\x03abc")
        )
        assert client.greeting.code == 220
        await client.close()
        await live.sessions_settle()
        assert live.problems() == []
        refusals = [line for line in live.lines if "PROXY header from" in line]
        assert len(refusals) == len(REFUSED)
