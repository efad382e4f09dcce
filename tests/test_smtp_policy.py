"""The decision order and the deferral over real sockets: the adapter wired to the session core, the
decider, a real DNS server and a backend. The rules themselves are tested without sockets
(test_core_*.py, test_decision.py, test_deferral.py); these prove they are wired up."""

from __future__ import annotations

import pytest

from tests.gatewayenv import NO_PTR, SERVFAIL, UNCONFIRMED, start_env

MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"


async def attempt(
    env, source: str, sender: str = "alice@sender.example", rcpt: str = "bob@example.com"
):
    """One session up to RCPT; returns the RCPT reply (and QUITs)."""
    client = await env.client(source)
    await client.ehlo()
    await client.cmd(f"MAIL FROM:<{sender}>")
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    if reply.code == 421:  # the server closes after a 421
        assert await client.closed()
        return reply
    if reply.code < 400:
        await client.cmd("RSET")
    await client.cmd("QUIT")
    await client.close()
    return reply


async def deliver(env, source: str, rcpt: str = "bob@example.com"):
    client = await env.client(source)
    await client.ehlo()
    replies = await client.send_mail("alice@sender.example", [rcpt], MESSAGE)
    await client.cmd("QUIT")
    await client.close()
    return replies


async def test_clean_host_passes_at_once(env) -> None:
    replies = await deliver(env, "127.0.0.2")
    assert [r.code for r in replies] == [250, 250, 250]
    assert len(env.backend.messages) == 1


async def test_a_returning_host_is_assessed_before_its_greeting_without_a_lookup(env) -> None:
    assert (await deliver(env, "127.0.0.3"))[1].code == 450  # DNS looked up, deferred
    queries = env.gateway.resolver.queries_sent
    client = await env.client("127.0.0.3")
    (session,) = env.gateway.sessions
    # Cached reverse DNS: the assessment is there at the greeting, no task, no query.
    assert session.core.assessment is not None and session.ahead.assessment_task is None
    await client.ehlo()
    replies = await client.send_mail("alice@sender.example", ["bob@example.com"], MESSAGE)
    assert replies[1].code == 450 and "retry in" in replies[1].text  # its record was read
    assert env.gateway.resolver.queries_sent == queries
    await client.close()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        # Every rule is tested on names in test_s25r.py and through the decider in
        # test_decision.py; here the names come from a DNS server over the wire.
        ("127.0.0.3", "s25r_rule1"),
        (NO_PTR, "s25r_rule0"),
        (UNCONFIRMED, "s25r_rule0"),
        ("127.0.0.11", "s25r_blacklist"),
    ],
)
async def test_suspect_deferred_early_promoted_familiar(env, source: str, reason: str) -> None:
    first = await attempt(env, source)
    assert first.code == 450 and first.text.startswith("4.7.1 ") and f"({reason})" in first.text
    env.clock.advance(120)
    early = await attempt(env, source)
    # Two minutes on: a patient retry, before the delay but not counted.
    assert early.code == 450 and f"retried before the delay ({reason})" in early.text
    assert "retry in 3m00s" in early.text
    assert env.backend.connections == 1  # only the start-up probe: deferred hosts never reach it
    env.clock.advance(180)  # exactly min_retry_delay after the first attempt
    promoted = await deliver(env, source)
    assert [r.code for r in promoted] == [250, 250, 250]
    env.clock.advance(86400 * 20)
    familiar = await deliver(env, source)
    assert [r.code for r in familiar] == [250, 250, 250]
    assert len(env.backend.messages) == 2


async def test_several_recipients_are_one_attempt(env) -> None:
    client = await env.client("127.0.0.3")
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    replies = [await client.cmd(f"RCPT TO:<user{i}@example.com>") for i in range(3)]
    assert all("(s25r_rule1)" in r.text for r in replies)  # never "early_retry"
    await client.close()


@pytest.mark.gateway({"policy": {"impatient_retries": 3}})
async def test_impatient_host_gets_421_at_the_greeting(env) -> None:
    replies = []
    for _ in range(3):  # the same message, again every six seconds
        replies.append(await attempt(env, "127.0.0.3"))
        env.clock.advance(6)
    assert [r.code for r in replies] == [450, 450, 450]
    fourth = await attempt(env, "127.0.0.3")
    assert fourth.code == 421 and fourth.text.startswith("4.7.0 ")
    client = await env.client("127.0.0.3")
    assert client.greeting.code == 421 and "come back in" in client.greeting.text
    assert await client.closed()
    env.clock.advance(3600)
    client = await env.client("127.0.0.3")
    assert client.greeting.code == 220
    await client.close()


async def test_dns_servfail_is_a_temporary_451(env) -> None:
    reply = await attempt(env, SERVFAIL)
    assert reply.code == 451 and reply.text.startswith("4.4.3 ")
    assert await env.gateway.store.scan() == []  # nothing recorded


@pytest.mark.parametrize(
    "rcpt",
    [
        "victim@elsewhere.example",
        "@relay.example.com:victim@elsewhere.example",  # source route
        "victim%elsewhere.example@example.com",  # percent hack
        '"victim@elsewhere.example"@example.com',  # quoted local part
        "elsewhere.example!victim@example.com",  # bang path
        "victim@[192.0.2.1]",
    ],
)
async def test_relay_attempts_get_5xx_before_any_deferral(env, rcpt: str) -> None:
    reply = await attempt(env, "127.0.0.3", rcpt=rcpt)  # a suspect: 554, not 450
    assert reply.code == 554 and reply.text == "5.7.1 Relay access denied"


async def test_null_sender_deferred_at_data_with_rcpt_mirrored(env) -> None:
    env.backend.refuse["nobody@example.com"] = (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected"
    )
    client = await env.client("127.0.0.3")
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<>")).code == 250
    ok = await client.cmd("RCPT TO:<bob@example.com>")
    assert ok.code == 250  # a sender-verification callback learns the mailbox exists
    unknown = await client.cmd("RCPT TO:<nobody@example.com>")
    assert unknown.code == 550 and "Recipient address rejected" in unknown.text
    data = await client.cmd("DATA")
    assert data.code == 451 and data.text.startswith("4.7.1 ") and "(s25r_rule1)" in data.text
    assert (await client.cmd("QUIT")).code == 221
    await client.close()
    assert env.backend.messages == []


@pytest.mark.gateway({"policy": {"defer": "all"}})
async def test_null_sender_from_clean_host_in_onajimi_mode(env) -> None:
    client = await env.client("127.0.0.2")
    await client.ehlo()
    await client.cmd("MAIL FROM:<>")
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    assert (await client.cmd("DATA")).code == 451
    await client.close()


async def test_deny_list_postfix_regexp_white_list_and_dynamic_entries(tmp_path) -> None:
    (tmp_path / "white_list").write_text("/^p1234-ip45\\.dyn\\.example\\.jp$/ OK\n")
    (tmp_path / "rejections").write_text(
        "127.0.0.8 554 Persistent spam source\n/^host12345\\./ REJECT\n"
    )
    env = await start_env(
        {
            "lists": {
                "allow_files": [str(tmp_path / "white_list")],
                "deny_files": [str(tmp_path / "rejections")],
            }
        }
    )
    try:
        assert [r.code for r in await deliver(env, "127.0.0.3")] == [250, 250, 250]  # white-listed
        client = await env.client("127.0.0.8")
        assert (
            client.greeting.code == 554 and client.greeting.text == "5.7.1 Persistent spam source"
        )
        assert (await client.cmd("EHLO pc")).code == 503
        assert (await client.cmd("MAIL FROM:<a@b.example>")).code == 503
        assert (await client.cmd("QUIT")).code == 221
        assert await client.closed()
        # A name entry in the deny list makes the greeting wait for the PTR lookup.
        named = await env.client("127.0.0.4")
        assert named.greeting.code == 554
        await named.close()
        # Dynamic entries reach the running gateway without a restart.
        from gateway.store.base import DynamicEntry

        await env.gateway.store.add_entry("deny", DynamicEntry("127.0.0.2", "", env.clock.now))
        await env.gateway._refresh_dynamic()
        denied = await env.client("127.0.0.2")
        assert denied.greeting.code == 554
        await denied.close()
    finally:
        await env.close()


async def test_familiar_after_a_gateway_restart(tmp_path) -> None:
    store = {"store": {"url": f"sqlite://{tmp_path / 'state.db'}"}}
    env = await start_env(store)
    assert (await attempt(env, "127.0.0.3")).code == 450
    env.clock.advance(400)
    assert [r.code for r in await deliver(env, "127.0.0.3")] == [250, 250, 250]
    await env.stop()
    # A new gateway process state: same database, later clock.
    env.clock.advance(86400)
    again = await start_env(store, dns=env.dns, backend=env.backend, clock=env.clock)
    try:
        assert [r.code for r in await deliver(again, "127.0.0.3")] == [250, 250, 250]
    finally:
        await again.stop()
        await env.backend.stop()
        env.dns.stop()


async def test_familiar_refreshed_only_by_accepted_delivery(env) -> None:
    from gateway.policy.records import Familiar

    await env.gateway.store.put(
        "defer:127.0.0.3", Familiar(env.clock.now, env.clock.now, env.clock.now + 1000)
    )
    env.clock.advance(100)
    env.backend.faults["DATA_END"] = "554 5.7.1 Spam content"
    refused = await deliver(env, "127.0.0.3")
    assert refused[-1].code == 554
    assert (await env.gateway.store.get("defer:127.0.0.3")).last_seen == env.clock.now - 100
    del env.backend.faults["DATA_END"]
    assert (await deliver(env, "127.0.0.3"))[-1].code == 250
    assert (await env.gateway.store.get("defer:127.0.0.3")).last_seen == env.clock.now


async def test_decision_and_relay_log_lines(env, caplog) -> None:
    caplog.set_level("INFO", logger="onajimi")
    await attempt(env, "127.0.0.3")
    await deliver(env, "127.0.0.2")
    decisions = [r.getMessage() for r in caplog.records if r.name == "onajimi.decision"]
    assert any(
        "client=127.0.0.3 ptr=p1234-ip45.dyn.example.jp helo=client.example "
        "from=<alice@sender.example> to=<bob@example.com> action=defer reason=s25r_rule1 "
        "key=127.0.0.3 attempt=1" in line
        for line in decisions
    ), decisions
    assert any("action=pass reason=clean" in line for line in decisions)
    relays = [r.getMessage() for r in caplog.records if r.name == "onajimi.relay"]
    assert len(relays) == 1 and "result=delivered" in relays[0] and "queued as Q1" in relays[0]


async def test_exempt_recipients_are_never_deferred_but_still_relay_checked(env) -> None:
    """postmaster@ and abuse@ (the defaults): a misjudged sender can always reach them."""
    suspect = "127.0.0.3"
    assert (await attempt(env, suspect)).code == 450  # bob is deferred as ever
    assert (await attempt(env, suspect, rcpt="postmaster@example.com")).code == 250
    assert (await attempt(env, suspect, rcpt="abuse@example.com")).code == 250
    assert (await attempt(env, suspect, rcpt="postmaster@elsewhere.example")).code == 554
    # The null sender too: a bounce to the postmaster is no callback to postpone.
    client = await env.client(suspect)
    await client.ehlo()
    replies = await client.send_mail("", ["postmaster@example.com"], MESSAGE)
    assert [r.code for r in replies] == [250, 250, 250]
    await client.close()
    assert len(env.backend.messages) == 1


@pytest.mark.gateway({"policy": {"trusted_networks": [], "exempt_recipients": []}})
async def test_no_exemptions_when_the_list_is_empty(env) -> None:
    assert (await attempt(env, "127.0.0.3", rcpt="postmaster@example.com")).code == 450
