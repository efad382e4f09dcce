"""Auto-ban: relay attempts, unknown recipients and idle sessions, counted per address
key; past a limit, the penalty box (policy/strikes.py). Real sockets, a real DNS server,
the fault-injecting backend; the gateway's clock in the test's hands."""

from __future__ import annotations

import pytest

from gateway.policy.records import Penalty, Space, store_key
from tests.waiting import eventually

SUSPECT = "127.0.0.3"  # p1234-ip45.dyn.example.jp
CLEAN = "127.0.0.2"  # mail.example.org


def autoban(**settings):
    return pytest.mark.gateway({"autoban": settings})


async def session(env, source: str, sender: str = "alice@sender.example"):
    client = await env.client(source)
    assert client.greeting.code == 220, client.greeting
    await client.ehlo()
    await client.cmd(f"MAIL FROM:<{sender}>")
    return client


async def penalty(env, address: str) -> Penalty | None:
    record = await env.gateway.store.get(store_key(Space.PENALTY, address))
    return record if isinstance(record, Penalty) else None


@autoban(relay_limit=3, penalty_ttl=600)
async def test_relay_attempts_put_the_client_in_the_penalty_box(env) -> None:
    client = await session(env, SUSPECT)
    for _ in range(2):
        assert (await client.cmd("RCPT TO:<x@elsewhere.example>")).code == 554
    await client.close()
    client = await session(env, SUSPECT)  # strikes add up across sessions
    dropped = await client.cmd("RCPT TO:<y@elsewhere.example>")
    assert dropped.code == 421 and "Too many relay attempts" in dropped.text
    assert await client.closed()
    boxed = await penalty(env, SUSPECT)
    assert boxed is not None and boxed.reason == "autoban_relay"
    assert boxed.expires == env.clock() + 600
    again = await env.client(SUSPECT)
    assert again.greeting.code == 421 and "Too many relay attempts" in again.greeting.text
    await again.close()
    other = await env.client(CLEAN)  # counted by address key: nobody else is boxed
    assert other.greeting.code == 220
    await other.close()


@autoban(relay_limit=1)
async def test_the_null_sender_is_never_struck(env) -> None:
    client = await session(env, SUSPECT, sender="")
    for _ in range(3):
        assert (await client.cmd("RCPT TO:<x@elsewhere.example>")).code == 554
    await client.close()
    assert await penalty(env, SUSPECT) is None


@autoban(probe_limit=3)
async def test_unknown_recipients_at_the_backend_are_probes(env) -> None:
    env.backend.refuse["who@example.com"] = "550 5.1.1 <who@example.com>: User unknown"
    client = await session(env, CLEAN)  # a clean host passes, and can harvest
    for _ in range(2):
        assert (await client.cmd("RCPT TO:<who@example.com>")).code == 550
    dropped = await client.cmd("RCPT TO:<who@example.com>")
    assert dropped.code == 421 and "Too many unknown recipients" in dropped.text
    boxed = await penalty(env, CLEAN)
    assert boxed is not None and boxed.reason == "autoban_probe"


@autoban(probe_limit=1)
async def test_a_full_mailbox_or_a_callback_is_no_probe(env) -> None:
    env.backend.refuse["who@example.com"] = "552 5.2.2 <who@example.com>: Mailbox full"
    client = await session(env, CLEAN)
    assert (await client.cmd("RCPT TO:<who@example.com>")).code == 552
    await client.close()
    env.backend.refuse["who@example.com"] = "550 5.1.1 <who@example.com>: User unknown"
    callback = await session(env, CLEAN, sender="")  # MAIL FROM:<> RCPT TO:<x>: verifying
    assert (await callback.cmd("RCPT TO:<who@example.com>")).code == 550
    await callback.close()
    assert await penalty(env, CLEAN) is None


@pytest.mark.gateway({"autoban": {"loiter_limit": 2}, "limits": {"command_timeout": 0.3}})
async def test_sessions_ending_on_the_timeout_are_loitering(env) -> None:
    for _ in range(2):
        client = await session(env, SUSPECT)
        timed_out = await client.read_reply(timeout=5)  # and say nothing more
        assert timed_out.code == 421 and "timeout" in timed_out.text
        await client.close()
    boxed = await eventually(lambda: penalty(env, SUSPECT))  # counted on the side
    assert boxed.reason == "autoban_loiter"
    again = await env.client(SUSPECT)
    assert again.greeting.code == 421 and "Too many idle sessions" in again.greeting.text
    await again.close()
