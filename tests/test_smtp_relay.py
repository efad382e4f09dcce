"""The queue-less relay (README "Reliability notes"). Byte-exact, mirrored, never a 250 the backend
did not give, and the gateway keeps serving whatever the backend does."""

from __future__ import annotations

import pytest

from gateway.relay.received import received_header
from tests.gatewayenv import start_env
from tests.waiting import eventually

TRICKY = (
    b"From: Alice <alice@sender.example>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two dots\r\n"
    b".\r\n"  # a line that is just a dot (must be stuffed, not end the message)
    b"trailing spaces   \r\n"
    b"\tleading tab\r\n"
    b"8bit: caf\xc3\xa9 \xff\xfe\r\n" + b"x" * 4000 + b"\r\n"
    b"\r\n"
    b"last line without anything after\r\n"
)


async def send(
    env,
    source="127.0.0.2",
    content=TRICKY,
    rcpts=("bob@example.com",),
    sender="alice@sender.example",
):
    client = await env.client(source)
    await client.ehlo()
    replies = await client.send_mail(sender, list(rcpts), content)
    await client.cmd("QUIT")
    await client.close()
    return replies


def body_of(message) -> bytes:
    """The message as the backend stored it, without the gateway's Received header."""
    data = message.data
    assert data.startswith(b"Received: from ")
    end = data.index(b"\r\n", data.index(b"\tby "))
    end = data.index(b"\r\n", end + 2) + 2 if data[end + 2 : end + 3] == b"\t" else end + 2
    return data[end:]


async def test_clean_message_relayed_byte_exact_with_received_header(env) -> None:
    replies = await send(env)
    assert [r.code for r in replies] == [250, 250, 250]
    assert replies[-1].text == "2.0.0 Ok: queued as Q1"  # the backend's own reply
    (message,) = env.backend.messages
    assert body_of(message) == TRICKY
    header = message.data[: len(message.data) - len(TRICKY)].decode()
    assert header.startswith("Received: from client.example (mail.example.org [127.0.0.2])\r\n")
    assert "\tby gw.test (Onajimi) with ESMTP id " in header
    assert "\tfor <bob@example.com>; " in header
    assert message.sender == "alice@sender.example" and message.recipients == ["bob@example.com"]


def test_received_header_cannot_be_broken_by_client_values() -> None:
    header = received_header(
        helo="evil\r\n(x)[y];\\ é",
        ptr="p1.dyn.example.jp",
        address="2001:db8::9",
        protocol="ESMTPS",
        tls="using TLSv1.3 with cipher (x)",
        hostname="mx.example.com",
        transaction_id="3f2a.1",
        recipient="bob@example.com\r\nBcc: x",
        when=0.0,
    ).decode("ascii")
    lines = header.split("\r\n")
    assert lines[0] == "Received: from evil???x??y????? (p1.dyn.example.jp [IPv6:2001:db8::9])"
    assert lines[1] == "\t(using TLSv1.3 with cipher ?x?)"
    assert lines[3].startswith("\tfor <bob@example.com??Bcc:?x>; ")
    assert len(lines) == 5 and lines[4] == ""


async def test_xclient_carries_the_real_client(env) -> None:
    await send(env, source="127.0.0.2")
    (message,) = env.backend.messages
    assert message.xclient["ADDR"] == "127.0.0.2"
    assert message.xclient["NAME"] == "mail.example.org"
    assert message.xclient["HELO"] == "client.example"
    assert message.xclient["PROTO"] == "ESMTP"
    # After XCLIENT the backend takes the next EHLO as the client's: it carries the client's name.
    commands = env.backend.commands
    xclient_at = next(i for i, c in enumerate(commands) if c.startswith("XCLIENT"))
    assert commands[xclient_at - 1] == "EHLO gw.test"  # before it, the gateway's own name
    assert commands[xclient_at + 1] == "EHLO client.example"
    assert message.helo == "client.example"


async def test_unsafe_helo_is_not_repeated_to_the_backend(env) -> None:
    client = await env.client()
    await client.ehlo("two words")
    await client.send_mail("alice@sender.example", ["bob@example.com"], b"s\r\n")
    await client.close()
    (message,) = env.backend.messages
    assert message.xclient["HELO"] == "two+20words"  # xtext keeps it, safely encoded
    assert message.helo == "gw.test"


async def test_xforward_when_the_backend_offers_only_that(env) -> None:
    env.backend.extensions = ["PIPELINING", "8BITMIME", "XFORWARD NAME ADDR PROTO HELO"]
    await send(env)
    (message,) = env.backend.messages
    assert message.xclient == {}
    assert message.xforward == {
        "NAME": "mail.example.org",
        "ADDR": "127.0.0.2",
        "PROTO": "ESMTP",
        "HELO": "client.example",
    }


async def test_xclient_refused_by_the_backend_fails_loudly(env) -> None:
    env.backend.faults["XCLIENT"] = "550 5.7.0 Error: insufficient authorization"
    env.backend.extensions = ["XCLIENT NAME ADDR PROTO HELO"]
    replies = await send(env)
    assert replies[1].code == 451 and replies[1].text.startswith("4.4.1")
    assert env.backend.messages == []


async def test_mail_parameters_forwarded_where_offered(env) -> None:
    client = await env.client()
    await client.ehlo()
    assert (
        await client.cmd("MAIL FROM:<alice@sender.example> SIZE=1000 BODY=8BITMIME")
    ).code == 250
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    assert (await client.data(b"Subject: x\r\n\r\nbody\r\n")).code == 250
    await client.close()
    assert env.backend.mail_parameters[-1] == "SIZE=1000 BODY=8BITMIME"


async def test_smtputf8_advertised_and_relayed_when_the_backend_offers_it(env) -> None:
    client = await env.client()
    ehlo = await client.ehlo()
    assert "SMTPUTF8" in ehlo.lines
    assert (await client.cmd("MAIL FROM:<jos\u00e9@sender.example> SMTPUTF8".encode())).code == 250
    assert (await client.cmd("RCPT TO:<b\u00f6b@example.com>".encode())).code == 250
    assert (await client.data("Subject: h\u00e9\r\n\r\nb\u00f6dy\r\n".encode())).code == 250
    await client.close()
    (message,) = env.backend.messages
    assert message.sender == "jos\u00e9@sender.example"
    assert env.backend.mail_parameters[-1] == "SMTPUTF8"


async def test_no_smtputf8_when_the_backend_lacks_it() -> None:
    from tests.backend import FakeBackend

    backend = await FakeBackend().start()
    backend.extensions = ["8BITMIME"]
    env = await start_env(backend=backend)
    try:
        client = await env.client()
        assert "SMTPUTF8" not in (await client.ehlo()).lines
        await client.close()
    finally:
        await env.stop()
        await backend.stop()
        env.dns.stop()


async def test_rcpt_replies_mirrored_one_by_one(env) -> None:
    env.backend.refuse["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: User unknown"
    env.backend.refuse["full@example.com"] = "452 4.2.2 <full@example.com>: Mailbox full"
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    unknown = await client.cmd("RCPT TO:<nobody@example.com>")
    assert (unknown.code, unknown.text) == (550, "5.1.1 <nobody@example.com>: User unknown")
    full = await client.cmd("RCPT TO:<full@example.com>")
    assert (full.code, full.text) == (452, "4.2.2 <full@example.com>: Mailbox full")
    assert (await client.data(b"Subject: x\r\n\r\nhi\r\n")).code == 250
    await client.close()
    assert env.backend.messages[0].recipients == ["bob@example.com"]


async def test_several_transactions_and_rset_share_one_backend_connection(env) -> None:
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<first@sender.example>")
    await client.cmd("RCPT TO:<bob@example.com>")
    assert (await client.cmd("RSET")).code == 250
    await client.cmd("MAIL FROM:<second@sender.example>")
    await client.cmd("RCPT TO:<carol@example.com>")
    assert (await client.data(b"Subject: 2\r\n\r\nsecond\r\n")).code == 250
    assert (
        await client.send_mail(
            "third@sender.example", ["dave@example.com"], b"Subject: 3\r\n\r\n3\r\n"
        )
    )[-1].code == 250
    await client.cmd("QUIT")
    await client.close()
    senders = [(m.sender, m.recipients) for m in env.backend.messages]
    assert senders == [
        ("second@sender.example", ["carol@example.com"]),
        ("third@sender.example", ["dave@example.com"]),
    ]
    assert env.backend.connections == 2  # the start-up probe, then one for the whole session
    assert "RSET" in env.backend.commands


async def test_client_disconnect_mid_transaction_delivers_nothing(env) -> None:
    client = await env.client()
    assert (await client.start_data()).code == 354
    await client.send(b"Subject: half\r\n\r\nonly half of it")
    await client.close()

    def backend_dropped() -> bool:
        relayed = env.backend.sessions[1:]  # the first is the gateway's start-up probe
        return bool(relayed) and all(s.transport.is_closing() for s in relayed)

    await eventually(backend_dropped)
    assert env.backend.messages == []


# -- backend faults: in no case a 250 the backend did not give -----------------------------


@pytest.mark.parametrize(
    ("stage", "fault", "failing_step"),
    [
        ("CONNECT", "hang", 1),
        ("MAIL", "hang", 1),
        ("RCPT", "hang", 1),
        ("DATA", "hang", 2),
        ("DATA_END", "hang", 2),
        ("DATA", "drop", 2),
        ("DATA_END", "drop", 2),
        ("CONNECT", "421 4.3.2 Service shutting down", 1),
        ("RCPT", "421 4.3.2 Shutting down", 1),
    ],
)
async def test_backend_faults_give_451_441(env, stage, fault, failing_step) -> None:
    env.backend.faults[stage] = fault
    replies = await send(env)
    codes = [r.code for r in replies]
    assert codes[failing_step] == 451 and replies[failing_step].text.startswith("4.4.1")
    assert 250 not in codes[failing_step:]
    assert env.backend.messages == []
    # The gateway keeps serving: the next client gets through once the backend behaves.
    env.backend.faults.clear()
    assert [r.code for r in await send(env)] == [250, 250, 250]


async def test_drop_after_354_is_never_250(env) -> None:
    env.backend.faults["DATA"] = "drop"
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    final = await client.data(b"Subject: x\r\n\r\nbody\r\n")
    assert final.code == 451
    assert (await client.cmd("NOOP")).code == 250  # the session continues
    await client.close()


@pytest.mark.parametrize(
    ("stage", "reply", "step"),
    [
        ("MAIL", "451 4.3.0 Try later", 1),
        ("MAIL", "553 5.1.8 Sender domain does not exist", 1),
        ("RCPT", "450 4.2.0 Greylisted", 1),
        ("DATA", "554 5.5.1 No valid recipients", 2),
        ("DATA_END", "552 5.3.4 Message too big", 2),
        ("DATA_END", "451 4.3.0 Queue file write error", 2),
    ],
)
async def test_backend_refusals_are_mirrored(env, stage, reply, step) -> None:
    env.backend.faults[stage] = reply
    replies = await send(env)
    assert f"{replies[step].code} {replies[step].text}" == reply
    assert env.backend.messages == []


async def test_refused_connection_then_recovery() -> None:
    from tests.backend import FakeBackend

    backend = await FakeBackend().start()
    env = await start_env(backend=backend)
    try:
        port = backend.port
        await backend.stop()
        replies = await send(env)
        assert replies[1].code == 451 and replies[1].text.startswith("4.4.1")
        await backend.start(port)
        assert [r.code for r in await send(env)] == [250, 250, 250]
    finally:
        await env.stop()
        await backend.stop()
        env.dns.stop()


# -- DATA streams: a message refused mid-way is never delivered ------------------------------


def backend_abandoned(env) -> bool:
    relayed = env.backend.sessions[1:]  # the first is the gateway's start-up probe
    return bool(relayed) and all(s.transport.is_closing() for s in relayed)


@pytest.mark.gateway({"limits": {"max_message_size": 100_000}})
async def test_too_big_mid_stream_is_552_and_the_backend_gets_no_end(env) -> None:
    client = await env.client()
    assert (await client.start_data()).code == 354
    line = b"x" * 998 + b"\r\n"
    for _ in range(300):  # 300 KB, well past the limit, in many writes
        await client.send(line)
    await client.send(b".\r\n")
    final = await client.read_reply()
    assert final.code == 552
    await eventually(lambda: backend_abandoned(env))
    assert env.backend.accepted == []
    assert (await client.cmd("NOOP")).code == 250  # the session goes on
    await client.close()


async def test_a_bare_line_end_late_in_a_long_message_is_refused_and_not_delivered(env) -> None:
    client = await env.client()
    assert (await client.start_data()).code == 354
    clean = b"y" * 78 + b"\r\n"
    await client.send(clean * 2000)  # 160 KB streamed on before the fault shows
    await client.send(b"then\n.\nMAIL FROM:<forged@example.com>\r\n")
    await client.send(clean + b".\r\n")
    final = await client.read_reply()
    assert final.code == 550
    await eventually(lambda: backend_abandoned(env))
    assert env.backend.accepted == [] and env.backend.messages == []
    await client.close()


async def test_a_backend_lost_after_rcpt_gets_no_lone_data(env) -> None:
    """DATA is never sent on a new connection: its MAIL and RCPT were on the lost one
    (Postfix would answer 503, a permanent refusal for the client)."""
    env.backend.faults["RCPT"] = "then-drop:250 2.1.5 Ok"
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    refused = await client.cmd("DATA")
    assert refused.code == 451 and refused.text.startswith("4.4.1")
    assert "DATA" not in env.backend.commands
    await client.close()
