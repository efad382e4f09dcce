"""AUTH passed through to a real Postfix backend (Cyrus SASL, a sasldb of its own).

A user's laptop on a dynamic address (an S25R suspect) logs in through the gateway and
relays to an outside domain via the backend: the backend decides, as with Postfix's
`permit_sasl_authenticated`. AUTH is offered only after STARTTLS, wrong passwords end
in the penalty box, and nothing the client sent reaches a log line.
"""

from __future__ import annotations

import asyncio
import base64
import logging

import pytest

from gateway.errors import StoreError
from gateway.policy.records import Penalty, Space, Strikes, store_key
from tests.backend import FakeBackend
from tests.gatewayenv import start_env
from tests.postfix import SaslPostfix, available, free_port
from tests.smtpclient import Client
from tests.tls import make_certificate

pytestmark = pytest.mark.skipif(available() is not None, reason=available() or "")

USER, PASSWORD = "alice", "correct horse 7"
SUSPECT = "127.0.0.3"  # p1234-ip45.dyn.example.jp: S25R rule 1, deferred without AUTH
PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
WRONG = base64.b64encode(f"\0{USER}\0not the password".encode()).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def postfix():
    instance = SaslPostfix(free_port(), {USER: PASSWORD}).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("cert"), "gw.test")


async def gateway_for(postfix, certificate, limits: dict | None = None, **auth):
    backend = FakeBackend()  # only its port is used: Postfix listens there
    backend.port = postfix.port
    cert, key = certificate
    overrides: dict = {"tls": {"mode": "auto", "cert": cert, "key": key}}
    if auth:
        overrides["auth"] = auth
    if limits:
        overrides["limits"] = limits
    return await start_env(overrides, backend=backend)


@pytest.fixture
async def env(postfix, certificate):
    env = await gateway_for(postfix, certificate)
    yield env
    await env.stop()
    env.dns.stop()


async def encrypted(env, source: str = SUSPECT) -> Client:
    client = await env.client(source)
    await client.ehlo()
    assert (await client.starttls()).code == 220
    return client


def sample(env, name: str, **labels: str) -> float:
    value = env.gateway.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_suspect_laptop_logs_in_and_relays_outside_through_the_backend(
    env, postfix, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    client = await encrypted(env)
    offered = await client.ehlo()
    assert "AUTH PLAIN LOGIN" in offered.lines  # the backend's mechanisms
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 235
    body = b"Subject: from my laptop\r\n\r\nSent from a dynamic address.\r\n"
    replies = await client.send_mail(
        f"{USER}@example.com", ["bob@elsewhere.test", "carol@example.com"], body
    )
    assert [r.code for r in replies] == [250, 250, 250, 250]  # no deferral, no relay check
    await client.cmd("QUIT")
    await client.close()

    log = postfix.log_text()
    # The backend saw the real client (XCLIENT) and who logged in, and relayed outside.
    (message,) = await asyncio.to_thread(postfix.delivered, 1)  # carol's copy
    assert b"with ESMTPSA id" in message  # RFC 3848: TLS, and authenticated
    assert "client=p1234-ip45.dyn.example.jp[127.0.0.3], sasl_method=PLAIN" in log
    assert f"sasl_username={USER}@backend.test" in log
    decisions = [r.getMessage() for r in caplog.records if r.name == "onajimi.decision"]
    assert len(decisions) == 2 and all("reason=authenticated" in d for d in decisions)
    assert sample(env, "onajimi_auth_total", result="ok") == 1


async def test_login_challenges_pass_between_client_and_backend(env) -> None:
    client = await encrypted(env)
    await client.ehlo()
    challenge = await client.cmd("AUTH LOGIN")
    assert challenge.code == 334
    assert base64.b64decode(challenge.text).lower().startswith(b"username")
    assert (await client.cmd(b64(USER))).code == 334
    assert (await client.cmd(b64(PASSWORD))).code == 235
    assert (await client.cmd("AUTH PLAIN " + PLAIN)).code == 503  # once per session
    await client.close()


async def test_no_auth_is_offered_or_taken_on_a_plain_connection(env) -> None:
    client = await env.client(SUSPECT)
    plain = await client.ehlo()
    assert not any(line.startswith("AUTH") for line in plain.lines)
    refused = await client.cmd(f"AUTH PLAIN {PLAIN}")
    assert refused.code == 530 and "STARTTLS" in refused.text
    # ...and without AUTH the suspect is screened as ever: deferred.
    await client.cmd("MAIL FROM:<alice@example.com>")
    assert (await client.cmd("RCPT TO:<carol@example.com>")).code == 450
    await client.close()


async def test_without_auth_relaying_is_refused_by_the_gateway_first(env) -> None:
    client = await encrypted(env, "127.0.0.2")  # a clean host, but not logged in
    await client.ehlo()
    # RFC 4954: MAIL's AUTH= parameter is accepted once AUTH is offered.
    assert (await client.cmd("MAIL FROM:<alice@example.com> AUTH=<>")).code == 250
    refused = await client.cmd("RCPT TO:<bob@elsewhere.test>")
    assert refused.code == 554 and "Relay access denied" in refused.text
    await client.close()


async def test_auth_after_a_relayed_transaction_was_reset(env, postfix) -> None:
    """The backend is still in the transaction the client's RSET ended: reset it first."""
    client = await encrypted(env, "127.0.0.2")
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@example.com>")
    assert (await client.cmd("RCPT TO:<carol@example.com>")).code == 250  # at the backend
    await client.cmd("RSET")
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 235
    await client.close()


async def test_bare_auth_and_a_second_starttls_are_refused_plainly(env, caplog) -> None:
    caplog.set_level(logging.ERROR)
    client = await env.client(SUSPECT)
    await client.ehlo()
    assert (await client.cmd("AUTH")).code == 530  # the STARTTLS rule comes first
    assert (await client.starttls()).code == 220
    await client.ehlo()
    bare = await client.cmd("AUTH")
    assert bare.code == 501 and "Syntax: AUTH mechanism" in bare.text
    again = await client.cmd("STARTTLS")  # RFC 3207: once
    assert again.code == 554 and "TLS already active" in again.text
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 235
    await client.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no internal error


async def test_endless_auth_attempts_are_junk(postfix, certificate) -> None:
    env = await gateway_for(postfix, certificate, limits={"junk_commands": 3})
    try:
        client = await encrypted(env)
        await client.ehlo()
        for _ in range(3):
            assert (await client.cmd("AUTH CRAM-MD5")).code == 504
        closing = await client.cmd("AUTH CRAM-MD5")
        assert closing.code == 421 and "too many commands" in closing.text
    finally:
        await env.stop()
        env.dns.stop()


async def test_cancelled_or_garbled_exchanges_are_not_failed_guesses(env) -> None:
    client = await encrypted(env)
    await client.ehlo()
    assert (await client.cmd("AUTH LOGIN")).code == 334
    assert (await client.cmd("*")).code == 501  # the backend's answer to the cancel
    assert (await client.cmd("AUTH PLAIN not*base64")).code == 501
    assert (await client.cmd("AUTH LOGIN")).code == 334
    assert (await client.cmd("<html>")).code == 501
    assert (await client.cmd("AUTH CRAM-MD5")).code == 504  # not offered by the backend
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 235  # the session still works
    await client.close()
    assert sample(env, "onajimi_auth_total", result="failed") == 0
    assert sample(env, "onajimi_auth_total", result="aborted") == 3


async def test_wrong_passwords_land_in_the_penalty_box(postfix, certificate) -> None:
    env = await gateway_for(postfix, certificate, max_failures=3, penalty_ttl=600)
    try:
        first = await encrypted(env)
        await first.ehlo()
        for _ in range(2):
            refused = await first.cmd(f"AUTH PLAIN {WRONG}")
            assert refused.code == 535  # the backend's reply, mirrored
        await first.close()
        second = await encrypted(env)  # the count is the store's, not the session's
        await second.ehlo()
        dropped = await second.cmd(f"AUTH PLAIN {WRONG}")
        assert dropped.code == 421 and "failed authentications" in dropped.text
        assert await second.closed()

        again = await env.client(SUSPECT)  # the address key is in the box: 421 at once
        assert again.greeting.code == 421 and "failed authentications" in again.greeting.text
        await again.close()
        penalty = await env.gateway.store.get(store_key(Space.PENALTY, SUSPECT))
        assert isinstance(penalty, Penalty) and penalty.reason == "auth_failures"
        assert penalty.expires == env.clock() + 600
        other = await env.client("127.0.0.2")  # its neighbours are not
        assert other.greeting.code == 220
        await other.close()
        assert sample(env, "onajimi_auth_total", result="failed") == 3
        assert sample(env, "onajimi_decisions_total", action="penalty", reason="auth_failures")

        env.clock.advance(601)  # the box opens again; the count window is still on
        record = await env.gateway.store.get(store_key(Space.STRIKES, f"{SUSPECT}/auth_failures"))
        assert isinstance(record, Strikes) and record.count == 3
        back = await env.client(SUSPECT)
        assert back.greeting.code == 220
        await back.close()
    finally:
        await env.stop()
        env.dns.stop()


async def test_one_session_cannot_keep_guessing_with_the_store_down(
    postfix, certificate, monkeypatch
) -> None:
    env = await gateway_for(postfix, certificate, max_failures=2)
    inner = env.gateway.store.inner
    update = inner.update

    async def down_for_counts(key, change, *args, **kwargs):
        if key.startswith("strikes:"):
            raise StoreError("memory: down for the test")
        return await update(key, change, *args, **kwargs)

    monkeypatch.setattr(inner, "update", down_for_counts)  # the count cannot be written
    try:
        client = await encrypted(env)
        await client.ehlo()
        assert (await client.cmd(f"AUTH PLAIN {WRONG}")).code == 535
        dropped = await client.cmd(f"AUTH PLAIN {WRONG}")
        assert dropped.code == 421 and "too many failed authentications" in dropped.text
    finally:
        await env.stop()
        env.dns.stop()


async def test_no_log_line_carries_a_password_or_its_base64(env, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiosmtpd's and the backend client's included
    for answer in (PLAIN, WRONG):
        client = await encrypted(env)
        await client.ehlo()
        await client.cmd(f"AUTH PLAIN {answer}")
        await client.close()
    client = await encrypted(env)
    await client.ehlo()
    await client.cmd("AUTH LOGIN")
    await client.cmd(b64(USER))
    assert (await client.cmd(b64(PASSWORD))).code == 235
    await client.cmd("QUIT")
    await client.close()
    await asyncio.sleep(0.2)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "auth" in text  # the exchanges were logged...
    for secret in (PASSWORD, "not the password", PLAIN, WRONG, b64(PASSWORD)):
        assert secret not in text  # ...but never what was sent


async def no_auth_offered(env) -> None:
    client = await encrypted(env)
    offered = await client.ehlo()
    assert not any(line.startswith("AUTH") for line in offered.lines)
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 502
    await client.close()


async def test_a_backend_without_auth_means_no_auth_here(certificate) -> None:
    cert, key = certificate
    env = await start_env({"tls": {"mode": "auto", "cert": cert, "key": key}})
    try:
        await no_auth_offered(env)  # FakeBackend offers no AUTH
    finally:
        await env.close()


async def test_auth_mode_off_offers_nothing(postfix, certificate) -> None:
    env = await gateway_for(postfix, certificate, mode="off")
    try:
        await no_auth_offered(env)
    finally:
        await env.stop()
        env.dns.stop()


async def test_a_refused_message_ends_an_authenticated_session_plainly(env) -> None:
    """A message refused after the backend's 354 costs the backend connection, and an
    authenticated one cannot be replaced: the refusal, then the session ends (the client
    logs in afresh), never a 451 for every later message."""
    client = await encrypted(env)
    await client.ehlo()
    assert (await client.cmd(f"AUTH PLAIN {PLAIN}")).code == 235
    await client.cmd(f"MAIL FROM:<{USER}@example.com>")
    assert (await client.cmd("RCPT TO:<carol@example.com>")).code == 250
    refused = await client.data(b"Subject: x\r\n\r\na bare\nline feed\r\n")
    assert refused.code == 550
    assert await client.closed()
