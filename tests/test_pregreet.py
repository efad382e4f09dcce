"""postscreen's pregreet test over real sockets: `220-` teaser, a wait, the final `220`.

The rules are in tests/test_core_connect.py terms too (greet_wait, greet_wait_over); these prove the
adapter sends the teaser, reads who talked, remembers them, and lets real clients by.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.assembly import build_policy
from gateway.policy.net import client_address
from gateway.policy.vocabulary import PregreetAction
from gateway.smtp.session import GREET, LookUp, Say, Session, SessionRules, Then
from tests.conftest import make_settings
from tests.gatewayenv import start_env
from tests.smtpclient import Client, proxy_v1

WAIT = 0.3


def pregreet(action: str) -> dict:
    return {"pregreet": {"greet_wait": WAIT, "action": action, "ttl": 3600}}


async def pregreeter(env, source: str = "127.0.0.2") -> Client:
    """A bot: EHLO right after connecting, without waiting for the greeting."""
    client = await Client.connect(env.port, source=source, greet=False)
    await client.send(b"EHLO bot.example\r\n")
    client.greeting = await client.read_reply(timeout=5)
    return client


@pytest.mark.gateway(pregreet("drop"))
async def test_a_patient_client_gets_the_two_line_greeting_and_goes_on(env) -> None:
    client = await env.client("127.0.0.2")
    assert client.greeting.code == 220 and client.greeting.lines == ["gw.test ESMTP"] * 2
    await client.ehlo()
    replies = await client.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
    assert [r.code for r in replies] == [250, 250, 250]
    await client.close()


@pytest.mark.gateway(pregreet("drop"))
async def test_a_pregreeter_is_dropped_and_remembered(env, caplog) -> None:
    caplog.set_level("INFO", logger="onajimi.decision")
    bot = await pregreeter(env)
    assert bot.greeting.code == 521 and "before the greeting" in bot.greeting.text
    assert await bot.closed()
    assert any("action=reject reason=pregreet" in r.getMessage() for r in caplog.records)
    # Its next connection meets the same answer without the wait (no teaser line).
    again = await env.client("127.0.0.2")
    assert again.greeting.code == 521 and len(again.greeting.lines) == 1
    # Another host is not affected.
    other = await env.client("127.0.0.14")
    assert other.greeting.code == 220
    await other.close()


@pytest.mark.gateway(pregreet("defer"))
async def test_defer_refuses_each_recipient_but_relay_attempts_get_5xx(env) -> None:
    bot = await pregreeter(env)
    assert bot.greeting.code == 220
    assert (await bot.read_reply()).code == 250  # its early EHLO, answered after the greeting
    await bot.cmd("MAIL FROM:<a@sender.example>")
    deferred = await bot.cmd("RCPT TO:<bob@example.com>")
    assert deferred.code == 450 and "(pregreet)" in deferred.text
    relay = await bot.cmd("RCPT TO:<victim@elsewhere.example>")
    assert relay.code == 554
    await bot.close()
    assert env.backend.messages == []


@pytest.mark.gateway(pregreet("ignore"))
async def test_ignore_only_notes_it(env, caplog) -> None:
    caplog.set_level("INFO", logger="onajimi.decision")
    bot = await pregreeter(env)
    assert (await bot.read_reply()).code == 250  # its early EHLO
    replies = await bot.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
    assert [r.code for r in replies] == [250, 250, 250]
    assert any("action=pass reason=pregreet" in r.getMessage() for r in caplog.records)
    await bot.close()


@pytest.mark.gateway({**pregreet("drop"), "policy": {"trusted_networks": ["127.0.0.7/32"]}})
async def test_trusted_clients_are_greeted_at_once(env) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    client = await env.client("127.0.0.7")
    assert client.greeting.lines == ["gw.test ESMTP"]  # no teaser, no wait
    assert loop.time() - started < WAIT
    await client.close()


# -- the rules, without a socket ---------------------------------------------------------
def _session(action: str, **facts) -> tuple[Session, object]:
    policy = build_policy(make_settings())
    session = Session(
        policy, SessionRules(greet_wait=2, pregreet_action=PregreetAction(action)), "s1"
    )
    session.arrive(client_address("192.0.2.9"))
    session.admission(None)
    out = session.connect_facts(policy.screen(client_address("192.0.2.9")), None, **facts)
    return session, out


@pytest.mark.unit
def test_the_wait_is_for_strangers_only() -> None:
    session, out = _session("drop")
    assert out == LookUp(wait=False) and session.greet_wait() == 2
    familiar, _ = _session("drop", familiar=True)
    assert familiar.greet_wait() == 0
    remembered, out = _session("defer", pregreeted=True)
    assert out == LookUp(wait=False)  # defer: greeted, refused at RCPT
    assert remembered.greet_wait() == 0 and remembered.pregreeted


@pytest.mark.unit
def test_a_remembered_pregreeter_is_dropped_before_any_wait() -> None:
    session, out = _session("drop", pregreeted=True)
    assert isinstance(out, Say) and out.reply.startswith("521 5.5.1") and out.then is Then.CLOSE
    assert session.pregreeted and session.greet_wait() == 0


@pytest.mark.unit
def test_silence_during_the_wait_is_a_pass() -> None:
    session, _ = _session("drop")
    assert session.greet_before_rdns() is GREET
    assert session.greet_wait_over(False) is None and not session.pregreeted


async def test_the_wait_is_not_counted_against_a_proxy_header_timeout(monkeypatch) -> None:
    """Behind a load balancer the connect stage runs inside the PROXY hook, under the
    header's short timeout: a patient client must still get its greeting."""
    monkeypatch.setattr("gateway.smtp.server.PROXY_HEADER_TIMEOUT", 0.2)
    env = await start_env(
        {
            "listen": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]},
            "pregreet": {"greet_wait": 0.5, "action": "drop"},
        }
    )
    try:
        client = await Client.connect(env.port, source="127.0.0.2", proxy=proxy_v1("192.0.2.25"))
        assert client.greeting.code == 220 and len(client.greeting.lines) == 2
        assert (await client.ehlo()).code == 250
        await client.close()
    finally:
        await env.close()
