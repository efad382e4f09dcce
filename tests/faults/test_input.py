"""Input the parser would forgive but SMTP does not: refused with a clear reply, and
nothing of it reaches the backend."""

from __future__ import annotations

from tests.faults.live import live_gateway

LONG_LABEL = "a" * 300

BAD_RECIPIENTS = [
    "RCPT TO:<bob@example.com >",  # a space inside the brackets
    "RCPT TO:< bob@example.com>",
    f"RCPT TO:<bob@{LONG_LABEL}.example.com>",  # RFC 5321: 63 octets a label
    f"RCPT TO:<bob@{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}.{'e' * 60}.example.com>",  # > 255
    b"RCPT TO:<bo\x00b@example.com>",
]
BAD_SENDERS = [
    "MAIL FROM:<alice@example.org >",
    b"MAIL FROM:<al\x00ice@example.org>",
    f"MAIL FROM:<alice@{LONG_LABEL}.org>",
]
BAD_HELLOS = [b"EHLO mx\x00.example.org", b"HELO mx\x00.example.org", b"EHLO " + b"m" * 300]


async def test_malformed_paths_and_names_are_refused(tmp_path) -> None:
    async with live_gateway(tmp_path) as live:
        client = await live.client("127.0.0.2")
        for hello in BAD_HELLOS:
            assert (await client.cmd(hello)).code == 501, hello
        assert (await client.cmd("MAIL FROM:<alice@example.org>")).code == 503  # no HELO yet
        await client.ehlo("mx.example.org")
        for mail in BAD_SENDERS:
            reply = await client.cmd(mail)
            assert reply.code == 553 and reply.text.startswith("5.1.3"), (mail, reply)
        assert (await client.cmd("MAIL FROM:<alice@example.org>")).code == 250
        for rcpt in BAD_RECIPIENTS:
            reply = await client.cmd(rcpt)
            assert reply.code == 553 and reply.text.startswith("5.1.3"), (rcpt, reply)
        assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250  # and on it goes
        await client.close()
        await live.sessions_settle()
        sent = [c for c in live.backend.commands if c.startswith(("MAIL", "RCPT"))]
        assert sent == ["MAIL FROM:<alice@example.org>", "RCPT TO:<bob@example.com>"]
        assert live.problems() == []
