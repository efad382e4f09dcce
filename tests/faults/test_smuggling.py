"""SMTP smuggling: every end-of-data variant of hannob/smtpsmug and
The-Login/SMTP-Smuggling-Tools, in both `relay.bare_newline` modes.

Behind the gateway sits the most lenient backend there is: it ends a message at any
of `\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`, `\\r\\n.\\n`, `\\r.\\n`, `\\n.\\r`, and drops NUL bytes
first, as some MTAs do. A vector the gateway let through would show there as a second,
forged message.
"""

from __future__ import annotations

import pytest

from gateway.relay.content import has_bare_newline
from tests.faults.live import live_gateway

VECTORS = {
    # hannob/smtpsmug
    "lflf": b"\n.\n",
    "crcr": b"\r.\r",
    "crlf": b"\r.\n",
    "lfcr": b"\n.\r",
    "lfcrlf": b"\n.\r\n",
    "crlflf": b"\r\n.\n",
    "crcrlf": b"\r.\r\n",
    "crlfcr": b"\r\n.\r",
    "nullbefore": b"\r\n\x00.\r\n",
    "nullafter": b"\r\n.\x00\r\n",
    # The-Login/SMTP-Smuggling-Tools, beyond the above
    "crlfcrcrlf": b"\r\n.\r\r\n",
    "crcrlfcrcrlf": b"\r\r\n.\r\r\n",
}
FORGED = b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"


def smuggling(vector: bytes) -> bytes:
    return (
        b"Subject: innocent\r\n\r\nhello"
        + vector
        + FORGED
        + b"Subject: forged\r\n\r\nsend money\r\n"
    )


async def send(live, vector: bytes):
    client = await live.client("127.0.0.2")
    assert (await client.start_data()).code == 354
    await client.send(smuggling(vector) + b"\r\n.\r\n")
    reply = await client.read_reply()
    await client.cmd("QUIT")
    await client.close()
    return reply


@pytest.mark.parametrize("mode", ["reject", "normalize"])
async def test_no_smuggling_vector_gets_a_second_message_through(tmp_path, mode) -> None:
    async with live_gateway(tmp_path, relay=f'bare_newline = "{mode}"') as live:
        live.backend.drop_nul = True
        wrong = []
        for name, vector in VECTORS.items():
            before = len(live.backend.messages)
            reply = await send(live, vector)
            delivered = live.backend.messages[before:]
            if mode == "reject":
                if reply.code != 550 or delivered:
                    wrong.append((name, str(reply), len(delivered)))
                continue
            if reply.code != 250 or len(delivered) != 1:
                wrong.append((name, str(reply), len(delivered)))
                continue
            (message,) = delivered
            body = message.data.split(b"\r\n\r\n", 1)[1]
            stray = b"\x00" in body or has_bare_newline(body)
            if message.recipients != ["bob@example.com"] or FORGED not in body or stray:
                wrong.append((name, "repaired wrongly", body))
        assert wrong == []
        if mode == "normalize":
            assert await live.metric("onajimi_data_normalized_total", what="nul") == 2
            assert await live.metric("onajimi_data_normalized_total", what="bare_newline") >= 10
        assert live.problems() == []
