"""The tarpit (policy.suspect_action, taRgrey's idea) over real sockets: a suspect's
deferred RCPT is held back; who waits passes (or meets its deferral), who hangs up has
retried early, and the tarpit never holds more than tarpit.max_sessions. Delays are a
fraction of a second here; the hold is one timer, whatever its length."""

from __future__ import annotations

import asyncio

import pytest

from gateway.policy.records import Familiar, Pending, Space, store_key
from tests.smtpclient import Client
from tests.test_smtp_policy import MESSAGE
from tests.waiting import eventually

SUSPECT = "127.0.0.3"  # p1234-ip45.dyn.example.jp (S25R rule 1)
OTHER_SUSPECT = "127.0.0.4"  # host12345.example.net (rule 2)


def tarpit(action: str = "tarpit", delay: float = 0.3, **more) -> pytest.MarkDecorator:
    return pytest.mark.gateway(
        {
            "policy": {"trusted_networks": [], "suspect_action": action},
            "tarpit": {"delay": delay, **more},
        }
    )


async def in_transaction(env, source: str) -> Client:
    client = await env.client(source)
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    return client


async def record(env, key: str):
    return await env.gateway.store.get(store_key(Space.DEFER, key))


@tarpit()
async def test_a_suspect_that_waits_passes_and_is_familiar_from_then_on(env) -> None:
    client = await env.client(SUSPECT)
    await client.ehlo()
    loop = asyncio.get_running_loop()
    started = loop.time()
    replies = await client.send_mail("alice@sender.example", ["bob@example.com"], MESSAGE)
    held = loop.time() - started
    assert [r.code for r in replies] == [250, 250, 250] and held >= 0.3
    await client.close()
    assert len(env.backend.messages) == 1
    assert isinstance(await record(env, SUSPECT), Familiar)
    again = await in_transaction(env, SUSPECT)  # familiar: no hold, no deferral
    assert (await again.cmd("RCPT TO:<bob@example.com>")).code == 250
    await again.close()
    assert (
        env.gateway.metrics.registry.get_sample_value("onajimi_tarpit_total", {"result": "waited"})
        == 1
    )


@tarpit("tarpit+defer")
async def test_tarpit_then_defer_holds_and_then_defers(env) -> None:
    client = await in_transaction(env, SUSPECT)
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 450
    await client.close()
    assert isinstance(await record(env, SUSPECT), Pending)


@tarpit(delay=5)
async def test_a_suspect_that_hangs_up_has_retried_early(env) -> None:
    client = await in_transaction(env, SUSPECT)
    await client.send(b"RCPT TO:<bob@example.com>\r\n")
    await asyncio.sleep(0.3)  # held: no answer yet
    await client.close()  # a bot gives up
    pending = await eventually(lambda: record(env, SUSPECT), lambda r: getattr(r, "early", 0))
    assert pending.early == 1
    metric = env.gateway.metrics.registry.get_sample_value
    await eventually(lambda: metric("onajimi_tarpit_total", {"result": "abandoned"}))


@tarpit(delay=5, max_sessions=1)
async def test_beyond_max_sessions_the_plain_deferral_comes_at_once(env) -> None:
    held = await in_transaction(env, SUSPECT)
    await held.send(b"RCPT TO:<bob@example.com>\r\n")
    await asyncio.sleep(0.3)
    second = await in_transaction(env, OTHER_SUSPECT)
    reply = await second.cmd("RCPT TO:<bob@example.com>", timeout=2)  # not held
    assert reply.code == 450
    await second.close()
    await held.close()


@tarpit()
async def test_clean_hosts_and_exempt_recipients_are_never_held(env) -> None:
    clean = await in_transaction(env, "127.0.0.2")
    assert (await clean.cmd("RCPT TO:<bob@example.com>")).code == 250
    await clean.close()
    suspect = await in_transaction(env, SUSPECT)
    assert (await suspect.cmd("RCPT TO:<postmaster@example.com>")).code == 250
    await suspect.close()
    metric = env.gateway.metrics.registry.get_sample_value
    assert sum(metric("onajimi_tarpit_total", {"result": r}) for r in ("waited", "full")) == 0
