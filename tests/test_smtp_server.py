"""Protocol hygiene, PROXY protocol, STARTTLS, limits and abusive input."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest
from aiosmtpd.smtp import SMTP

from gateway.smtp.server import HOOKS, GatewaySMTP
from tests.gatewayenv import start_env
from tests.smtpclient import Client, ClosedError, proxy_v1, proxy_v2
from tests.tls import make_certificate
from tests.waiting import eventually


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"), "gw.test")


async def test_ehlo_advertises_what_it_should_and_never_auth(env) -> None:
    client = await env.client()
    assert client.greeting.code == 220 and client.greeting.text == "gw.test ESMTP"
    ehlo = await client.ehlo()
    assert ehlo.lines == [
        "gw.test",
        "PIPELINING",
        "SIZE 26214400",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ]
    assert (await client.cmd("AUTH PLAIN AGZvbwBiYXI=")).code == 502
    assert (await client.cmd("VRFY bob")).code == 252
    expn = await client.cmd("EXPN staff")
    assert expn.code == 502 and expn.text.startswith("5.5.1")
    helo = await client.cmd("HELO old.example")
    assert (helo.code, helo.text) == (250, "gw.test")
    await client.close()


async def test_protocol_sets_every_attribute_aiosmtpd_sets(env) -> None:
    """GatewaySMTP.__init__ replaces aiosmtpd's: an upgrade adding state must show here."""
    theirs = SMTP(HOOKS, hostname="gw.test", loop=asyncio.get_running_loop())
    ours = GatewaySMTP(env.gateway.services)
    # Set per connection, or the same for every session (a class attribute or property).
    assert {name for name in vars(theirs) if not hasattr(ours, name)} == set()
    assert len(vars(ours)) <= 30  # CPython shares instance dict keys up to 30 (see __init__)
    assert ours._handle_hooks == theirs._handle_hooks
    assert ours._ehlo_hook_ver == theirs._ehlo_hook_ver
    for command in ("EHLO", "MAIL", "RCPT", "DATA", "QUIT", "AUTH", "NOPE"):
        method, reference = ours._smtp_methods.get(command), getattr(ours, f"smtp_{command}", None)
        assert method == reference


async def test_help_lists_the_commands(env) -> None:
    client = await env.client()
    reply = await client.cmd("HELP")
    assert reply.code == 250
    assert {"EHLO", "HELO", "MAIL", "RCPT", "DATA"} <= set(reply.text.split(": ")[1].split())
    assert "AUTH" not in reply.text and "EXPN" not in reply.text
    assert (await client.cmd("HELP RCPT")).text == "2.0.0 Syntax: RCPT TO: <address>"
    await client.close()


async def test_replies_carry_enhanced_status_codes(env) -> None:
    client = await env.client()
    await client.ehlo()
    for command, code, enhanced in [
        ("RCPT TO:<bob@example.com>", 503, "5.5.1"),  # before MAIL
        ("FROB", 500, "5.5.2"),
        ("MAIL FROM:<a@b.example> FOO=BAR", 555, "5.5.4"),
        ("NOOP", 250, "2.0.0"),
    ]:
        reply = await client.cmd(command)
        assert reply.code == code and reply.text.startswith(enhanced + " "), (command, reply)
    await client.close()


async def test_pipelined_commands_are_answered_in_order(env) -> None:
    client = await env.client()
    await client.ehlo()
    await client.send(
        b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<x@elsewhere.example>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n"
    )
    codes = [(await client.read_reply()).code for _ in range(5)]
    assert codes == [250, 250, 554, 250, 354]
    await client.send(b"Subject: p\r\n\r\npipelined\r\n.\r\nQUIT\r\n")
    assert (await client.read_reply()).code == 250
    assert (await client.read_reply()).code == 221
    await client.close()
    assert env.backend.messages[0].recipients == ["bob@example.com", "carol@example.com"]


@pytest.mark.gateway({"limits": {"max_recipients": 2}})
async def test_max_recipients_gives_452(env) -> None:
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<a@sender.example>")
    assert (await client.cmd("RCPT TO:<a@example.com>")).code == 250
    assert (await client.cmd("RCPT TO:<b@example.com>")).code == 250
    third = await client.cmd("RCPT TO:<c@example.com>")
    assert third.code == 452 and third.text.startswith("4.5.3")
    await client.close()


@pytest.mark.gateway({"limits": {"max_message_size": 2048}})
async def test_message_size_limit_at_mail_and_at_end_of_data(env) -> None:
    client = await env.client()
    assert "SIZE 2048" in (await client.ehlo()).lines
    too_big = await client.cmd("MAIL FROM:<a@sender.example> SIZE=4096")
    assert too_big.code == 552 and too_big.text.startswith("5.3.4")
    await client.cmd("MAIL FROM:<a@sender.example>")
    await client.cmd("RCPT TO:<bob@example.com>")
    reply = await client.data(
        b"Subject: big\r\n\r\n" + b"y" * 70 + b"\r\n" * 0 + (b"z" * 100 + b"\r\n") * 40
    )
    assert reply.code == 552 and reply.text.startswith("5.3.4")
    assert (await client.cmd("NOOP")).code == 250
    await client.close()
    assert env.backend.messages == []


@pytest.mark.gateway({"limits": {"command_timeout": 1}})
async def test_command_timeout_says_421_before_closing(env) -> None:
    client = await env.client()
    await client.ehlo()
    reply = await client.read_reply(timeout=5)
    assert reply.code == 421 and reply.text.startswith("4.4.2")
    assert await client.closed()


@pytest.mark.gateway({"limits": {"command_timeout": 1}})
async def test_client_stalling_mid_data_delivers_nothing(env) -> None:
    client = await env.client()
    assert (await client.start_data()).code == 354
    await client.send(b"Subject: stalled\r\n\r\nand then nothing")
    assert (await client.read_reply(timeout=5)).code == 421
    await asyncio.sleep(0.2)
    assert env.backend.messages == []
    other = await env.client()  # others are served meanwhile
    assert other.greeting.code == 220
    await other.close()


async def test_internal_error_is_451_and_the_session_goes_on(env, monkeypatch) -> None:
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(env.gateway.decider, "at_rcpt", broken)
    client = await env.client()
    await client.ehlo()
    await client.cmd("MAIL FROM:<a@sender.example>")
    reply = await client.cmd("RCPT TO:<bob@example.com>")
    assert reply.code == 451 and reply.text == "4.3.0 Internal error, try again later"
    assert (await client.cmd("NOOP")).code == 250
    monkeypatch.undo()
    await client.cmd("RSET")
    assert [
        r.code for r in await client.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
    ] == [250, 250, 250]
    await client.close()


# -- PROXY protocol --------------------------------------------------------------------------

PROXIED = {"listen": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]}}


@pytest.mark.gateway(PROXIED)
@pytest.mark.parametrize("header", [proxy_v1, proxy_v2])
async def test_proxy_header_gives_the_client_address(env, header) -> None:
    client = await env.client("127.0.0.2", proxy=header("192.0.2.25"))
    assert client.greeting.code == 220
    await client.ehlo()
    assert [
        r.code for r in await client.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
    ] == [250] * 3
    await client.close()
    message = env.backend.messages[0]
    assert (
        message.xclient["ADDR"] == "192.0.2.25" and message.xclient["NAME"] == "mx.sender.example"
    )
    assert b"(mx.sender.example [192.0.2.25])" in message.data
    suspect = await env.client("127.0.0.2", proxy=header("203.0.113.9"))  # judged by the header
    await suspect.ehlo()
    await suspect.cmd("MAIL FROM:<a@sender.example>")
    assert "(s25r_rule1)" in (await suspect.cmd("RCPT TO:<bob@example.com>")).text
    await suspect.close()


@pytest.mark.gateway(PROXIED)
async def test_proxy_ipv6_client(env) -> None:
    client = await env.client("127.0.0.2", proxy=proxy_v2("2001:db8::25", "2001:db8::1"))
    await client.ehlo()
    await client.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
    await client.close()
    message = env.backend.messages[0]
    assert message.xclient["ADDR"] == "IPV6:2001:db8::25"
    assert b"[IPv6:2001:db8::25]" in message.data


@pytest.mark.gateway({"listen": {"proxy_protocol": True, "proxy_trusted": ["10.0.0.0/8"]}})
async def test_proxy_header_from_untrusted_source_is_refused(env) -> None:
    with pytest.raises(ClosedError):
        await env.client("127.0.0.2", proxy=proxy_v1("192.0.2.25"))


@pytest.mark.gateway(PROXIED)
async def test_missing_proxy_header_closes(env) -> None:
    client = await Client.connect(env.port, source="127.0.0.2", greet=False)
    await client.send(b"EHLO sneaky.example\r\n")
    assert await client.closed(timeout=8)


# -- STARTTLS -------------------------------------------------------------------------------


async def test_starttls_and_proxy_address_survives_it(certificate) -> None:
    cert, key = certificate
    env = await start_env({"tls": {"cert": cert, "key": key}, **PROXIED})
    try:
        client = await env.client("127.0.0.2", proxy=proxy_v1("192.0.2.25"))
        assert "STARTTLS" in (await client.ehlo()).lines
        assert (await client.starttls()).code == 220
        after = await client.ehlo()
        assert "STARTTLS" not in after.lines and "AUTH" not in " ".join(after.lines)
        replies = await client.send_mail(
            "a@sender.example", ["bob@example.com"], b"Subject: tls\r\n\r\n.\r\n"
        )
        assert [r.code for r in replies] == [250, 250, 250]
        await client.close()
        message = env.backend.messages[0]
        assert message.xclient["ADDR"] == "192.0.2.25"
        assert b"with ESMTPS id" in message.data and b"(using TLSv1." in message.data
    finally:
        await env.close()


async def test_a_timeout_while_the_backend_answers_ends_the_session_cleanly(
    certificate, caplog
) -> None:
    """The 421 goes out while RCPT waits for the backend (over TLS, whose shutdown can keep
    the session's command running a little longer): the backend's late answer must
    change nothing, no internal error, no 451 after the 421."""
    cert, key = certificate
    env = await start_env({"tls": {"cert": cert, "key": key}, "limits": {"command_timeout": 1}})
    try:
        env.backend.faults["RCPT"] = "late:1.5:250 2.1.5 Ok"
        client = await env.client()
        await client.ehlo()
        assert (await client.starttls()).code == 220
        await client.ehlo()
        await client.cmd("MAIL FROM:<a@sender.example>")
        await client.send(b"RCPT TO:<bob@example.com>")
        reply = await client.read_reply(timeout=5)
        assert reply.code == 421 and reply.text.startswith("4.4.2")
        await asyncio.sleep(1.0)  # the backend's late 250 arrives meanwhile
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        await client.close()
        assert await _released(env)
    finally:
        await env.close()


async def test_mail_before_helo_after_starttls_is_refused(certificate) -> None:
    cert, key = certificate
    env = await start_env({"tls": {"cert": cert, "key": key}})
    try:
        client = await env.client()
        await client.ehlo()
        await client.starttls()
        assert (await client.cmd("MAIL FROM:<a@b.example>")).code == 503  # RFC 3207: EHLO again
        await client.close()
    finally:
        await env.close()


# -- limits and abusive input ---------------------------------------------------------------


@pytest.mark.gateway({"limits": {"max_connections_per_client": 20}})
async def test_a_client_opening_50_connections(env) -> None:
    clients = []
    for _ in range(50):
        clients.append(await Client.connect(env.port, source="127.0.0.3", greet=True))
    codes = [c.greeting.code for c in clients]
    assert codes.count(220) == 20 and codes.count(421) == 30
    assert all(c.greeting.text.startswith("4.7.0") for c in clients if c.greeting.code == 421)
    other = await env.client("127.0.0.2")  # someone else still gets in
    assert other.greeting.code == 220
    for c in [*clients, other]:
        await c.close()

    async def greeting() -> int:
        client = await env.client("127.0.0.3")
        await client.close()
        return client.greeting.code

    # Slots are released when connections go: the server notices the closes soon.
    assert await eventually(greeting, lambda code: code == 220) == 220


@pytest.mark.gateway({"limits": {"max_connections": 3}})
async def test_total_connection_limit(env) -> None:
    clients = [await env.client(f"127.0.0.{i}") for i in range(20, 25)]
    assert [c.greeting.code for c in clients] == [220, 220, 220, 421, 421]
    for c in clients:
        await c.close()


async def test_binary_garbage_and_huge_lines(env) -> None:
    client = await env.client()
    await client.send(os.urandom(4096).replace(b"\n", b"") + b"\r\n")
    garbage = await client.read_reply()
    assert 500 <= garbage.code < 600
    await client.send(b"EHLO " + b"a" * 100_000 + b"\r\n")
    long = await client.read_reply()
    assert long.code == 500 and "too long" in long.text
    assert (await client.ehlo()).code == 250  # still talking
    await client.close()


async def test_unknown_commands_end_the_session(env) -> None:
    client = await env.client()
    replies = []
    try:
        for i in range(1000):
            replies.append(await client.cmd(f"FOO{i}"))
    except (ClosedError, ConnectionError):
        pass
    assert len(replies) < 10 and replies[-1].code == 502
    other = await env.client()
    assert other.greeting.code == 220
    await other.close()


async def test_memory_stays_bounded_under_long_lines_and_big_data(env) -> None:
    process = psutil.Process()
    before = process.memory_info().rss
    for _ in range(5):
        client = await env.client()
        await client.ehlo()
        for _ in range(20):  # 20 x 100 KB command lines with no end in sight
            await client.send(b"NOOP " + b"n" * 100_000)
        await client.send(b"\r\n")
        assert (await client.read_reply()).code == 500
        await client.close()
    grown = (process.memory_info().rss - before) / 2**20
    assert grown < 64, f"RSS grew by {grown:.0f} MiB"


async def _released(env) -> bool:
    def released() -> bool:
        return not env.gateway.sessions and env.gateway.limits.active == 0

    return await eventually(released, timeout=1.0, step=0.02)


async def test_sessions_are_released_when_clients_hang_up(tmp_path) -> None:
    (tmp_path / "deny.txt").write_text("127.0.0.8\n")
    env = await start_env({"lists": {"deny_files": [str(tmp_path / "deny.txt")]}})
    try:
        denied = await env.client("127.0.0.8")  # hangs up during the 554 / 503 exchange
        assert denied.greeting.code == 554
        denied.writer.write_eof()
        normal = await env.client("127.0.0.2")  # hangs up mid-command
        await normal.send(b"EHLO half")
        normal.writer.write_eof()
        assert await _released(env)
    finally:
        await env.close()


@pytest.mark.gateway(PROXIED)
async def test_sessions_released_when_hanging_up_before_the_proxy_header(env) -> None:
    client = await Client.connect(env.port, source="127.0.0.2", greet=False)
    client.writer.write_eof()
    assert await _released(env)
