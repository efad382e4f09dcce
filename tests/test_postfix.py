"""Through the gateway into a real Postfix: delivery, the real client in Postfix's eyes,
and Postfix's own refusals mirrored to the client."""

from __future__ import annotations

import asyncio

import pytest

from tests.backend import FakeBackend
from tests.gatewayenv import start_env
from tests.postfix import PostfixInstance, available, free_port
from tests.test_backend_pipelining import pipelined_session
from tests.tls import make_certificate

pytestmark = pytest.mark.skipif(available() is not None, reason=available() or "")


@pytest.fixture(scope="module")
def postfix():
    instance = PostfixInstance(free_port()).start()
    yield instance
    instance.stop()


@pytest.fixture
async def gateway_to_postfix(postfix):
    backend = FakeBackend()  # only its port is used: Postfix listens there
    backend.port = postfix.port
    env = await start_env(backend=backend)
    yield env
    await env.stop()
    env.dns.stop()


async def test_message_arrives_and_postfix_sees_the_real_client(
    gateway_to_postfix, postfix
) -> None:
    env = gateway_to_postfix
    client = await env.client("127.0.0.2")  # mail.example.org in the test DNS
    await client.ehlo("client.example")
    body = (
        b"Subject: through the gateway\r\nFrom: alice@sender.example\r\n\r\n"
        b"Hello Postfix.\r\n.dot\r\n"
    )
    replies = await client.send_mail("alice@sender.example", ["bob@example.com"], body)
    assert [r.code for r in replies] == [250, 250, 250]
    assert "queued as" in replies[-1].text  # Postfix's own queue id, mirrored
    await client.cmd("QUIT")
    await client.close()

    (message,) = await asyncio.to_thread(postfix.delivered, 1)
    headers = message.split(b"\r\n\r\n" if b"\r\n\r\n" in message else b"\n\n", 1)[0].decode()
    # Postfix's Received header names the original client, thanks to XCLIENT...
    assert "from client.example (mail.example.org [127.0.0.2])" in headers
    # ...and so does its log; the gateway's own address (127.0.0.1) is not the client.
    log = postfix.log_text()
    assert "client=mail.example.org[127.0.0.2]" in log
    assert "by gw.test (Onajimi) with ESMTP id" in headers  # and the gateway's trace header
    assert message.replace(b"\r\n", b"\n").endswith(b"Hello Postfix.\n.dot\n")


async def test_postfix_refusals_are_mirrored(gateway_to_postfix) -> None:
    env = gateway_to_postfix
    client = await env.client("127.0.0.2")
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    refused = await client.cmd("RCPT TO:<nobody@example.com>")
    assert (
        refused.code == 554
        and "nobody@example.com" in refused.text
        and "No such user" in refused.text
    )
    assert (await client.cmd("RCPT TO:<carol@example.com>")).code == 250
    await client.close()


@pytest.fixture(scope="module")
def tls_postfix(tmp_path_factory):
    directory = tmp_path_factory.mktemp("backend-tls")
    cert, key = make_certificate(directory, "backend.test")
    other_ca, _ = make_certificate(directory, "someone-else")
    instance = PostfixInstance(free_port())
    instance.extra = {
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key,
    }
    instance.start()
    yield instance, cert, other_ca
    instance.stop()


async def _relay_over_tls(port: int, ca_file: str):
    backend = FakeBackend()
    backend.port = port
    env = await start_env({"backend": {"tls": "starttls", "ca_file": ca_file}}, backend=backend)
    try:
        client = await env.client("127.0.0.2")
        await client.ehlo()
        replies = await client.send_mail(
            "alice@sender.example", ["bob@example.com"], b"Subject: tls\r\n\r\nx\r\n"
        )
        await client.close()
        return replies
    finally:
        await env.stop()
        env.dns.stop()


async def test_backend_starttls_verified_with_ca_file(tls_postfix) -> None:
    instance, cert, _ = tls_postfix
    replies = await _relay_over_tls(instance.port, cert)
    assert [r.code for r in replies] == [250, 250, 250]
    await asyncio.to_thread(instance.delivered, 1)
    # Postfix's per-session statistics: the relayed session went through STARTTLS.
    session = [
        line
        for line in instance.log_text().splitlines()
        if "disconnect from mail.example.org" in line
    ]
    assert session and "starttls=1" in session[-1] and "data=1" in session[-1]


async def test_backend_certificate_from_another_ca_is_refused(tls_postfix) -> None:
    instance, _, other_ca = tls_postfix
    replies = await _relay_over_tls(instance.port, other_ca)
    assert replies[1].code == 451 and replies[1].text.startswith("4.4.1")


async def _pipelined_message(env, source: str) -> list[int]:
    """MAIL, RCPT and DATA in one write, its content, QUIT: the codes of each."""
    body = f"Subject: pipelined from {source}\r\n\r\nHello.\r\n".encode()
    return await pipelined_session(env, source, body)


async def _gateway_to(postfix, overrides: dict | None = None):
    backend = FakeBackend()  # only its port is used: Postfix listens there
    backend.port = postfix.port
    return await start_env(overrides, backend=backend)


async def test_pipelined_groups_keep_to_postfix_pipelining_rules(postfix) -> None:
    """smtpd_forbid_unauth_pipelining is on (tests/postfix.py): a group Postfix does not
    allow (anything after EHLO or DATA) would be cut off with 554 5.5.0."""
    before = len(postfix.messages())
    env = await _gateway_to(postfix)
    try:
        assert await _pipelined_message(env, "127.0.0.2") == [250, 250, 354, 250]
    finally:
        await env.stop()
        env.dns.stop()
    await asyncio.to_thread(postfix.delivered, before + 1)
    log = postfix.log_text()
    assert "improper command pipelining" not in log
    session = [line for line in log.splitlines() if "disconnect from mail.example.org" in line]
    assert "data=1" in session[-1] and "quit=1" in session[-1]
    assert "xforward" not in session[-1]  # XCLIENT said who the client is


async def test_reused_connection_carries_each_client_by_xforward(postfix) -> None:
    """backend.reuse: two clients, one after the other, on one Postfix connection; each
    message carries its own client (XFORWARD), and Postfix sees one session for both."""
    before = len(postfix.messages())
    env = await _gateway_to(postfix, {"backend": {"forward_client": "xforward", "reuse": True}})
    try:
        for source in ("127.0.0.2", "127.0.0.14"):
            assert await _pipelined_message(env, source) == [250, 250, 354, 250]
        kept = env.gateway.backend_pool
        assert kept is not None and len(kept) == 1
    finally:
        await env.stop()
        env.dns.stop()
    await asyncio.to_thread(postfix.delivered, before + 2)
    log = postfix.log_text()
    assert "client=localhost[127.0.0.1], orig_client=mail.example.org[127.0.0.2]" in log
    assert "client=localhost[127.0.0.1], orig_client=mx1.example.org[127.0.0.14]" in log
    assert "improper command pipelining" not in log
    sessions = [line for line in log.splitlines() if "disconnect from localhost" in line]
    assert "mail=2" in sessions[-1] and "data=2" in sessions[-1] and "rset=1" in sessions[-1]
