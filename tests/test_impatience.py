"""What counts as impatient, over real sockets (issue 9): callbacks never, bots always.

The gateway's clock is the test's: "every five seconds for a minute" takes no real time.
The real sending MTA's side of the story is tests/test_real_senders.py.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys

from tests.conftest import CONF
from tests.gatewayenv import start_env

MESSAGE = b"Subject: hello\r\n\r\nHello.\r\n"


async def rcpt(env, source: str, sender: str, recipient: str, size: int | None = 2048):
    """One session up to RCPT (MAIL with the SIZE a real MTA declares); the RCPT reply."""
    client = await env.client(source)
    if client.greeting.code != 220:
        await client.close()
        return client.greeting
    await client.ehlo("mta.example")
    await client.cmd(f"MAIL FROM:<{sender}>" + (f" SIZE={size}" if size else ""))
    reply = await client.cmd(f"RCPT TO:<{recipient}>")
    if reply.code != 421:
        await client.cmd("QUIT")
    await client.close()
    return reply


async def test_sender_verification_callbacks_are_answered_and_leave_nothing() -> None:
    env = await start_env({"policy": {"defer": "all"}})
    try:
        for n in range(10):  # a server verifying ten of our addresses, one session each
            client = await env.client("127.0.0.2")
            await client.ehlo("mx.verifier.example")
            assert (await client.cmd("MAIL FROM:<>")).code == 250
            reply = await client.cmd(f"RCPT TO:<user{n}@example.com>")
            assert reply.code == 250, reply  # the backend's answer, mirrored
            assert (await client.cmd("QUIT")).code == 221
            await client.close()
        assert await env.gateway.store.scan() == []  # no pending record, no penalty
        # Its first real message is a first contact, not a retry.
        first = await rcpt(env, "127.0.0.2", "alice@example.org", "bob@example.com")
        assert first.code == 450 and "(ichigen)" in first.text
    finally:
        await env.close()


async def test_a_bounce_is_deferred_at_data_and_promoted_there() -> None:
    env = await start_env({"policy": {"defer": "all"}})
    try:
        client = await env.client("127.0.0.2")
        await client.ehlo("mx.example.org")
        replies = await client.send_mail("", ["bob@example.com"], MESSAGE)
        assert [r.code for r in replies] == [250, 250, 451]  # RCPT mirrored, DATA deferred
        assert replies[-1].text.startswith("4.7.1 ") and "(ichigen)" in replies[-1].text
        again = await client.cmd("DATA")  # asked again in the same transaction: still no
        assert again.code == 451
        await client.close()
        (_key, record), *_ = await env.gateway.store.scan("defer:")
        assert type(record).__name__ == "Pending" and record.attempts == 1
        env.clock.advance(300)
        client = await env.client("127.0.0.2")
        await client.ehlo("mx.example.org")
        replies = await client.send_mail("", ["bob@example.com"], MESSAGE)
        assert [r.code for r in replies] == [250, 250, 250]  # promoted at DATA, relayed
        assert len(env.backend.messages) == 1
        await client.close()
    finally:
        await env.close()


async def _export_blocklist(tmp_path, store_url: str) -> list[str]:
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, tmp_path / name)
    config = tmp_path / "gateway.toml"
    config.write_text(f'[relay]\naccept_domains = ["example.com"]\n[store]\nurl = "{store_url}"\n')
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", "export-blocklist", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


async def test_a_bot_retrying_one_message_lands_in_the_penalty_box(tmp_path) -> None:
    store_url = f"sqlite://{tmp_path / 'state.db'}"
    env = await start_env({"store": {"url": store_url}})
    try:
        source = "127.0.0.3"  # p1234-ip45.dyn.example.jp: S25R rule 1
        codes = []
        for _ in range(10):  # the same message at once, ten times
            codes.append((await rcpt(env, source, "win@lottery.example", "bob@example.com")).code)
        elapsed = 0
        while codes[-1] != 421 and elapsed < 60:  # then every five seconds, for a minute
            env.clock.advance(5)
            elapsed += 5
            codes.append((await rcpt(env, source, "win@lottery.example", "bob@example.com")).code)
        assert codes[:10] == [450] * 10
        assert codes[-1] == 421 and elapsed <= 30
        client = await env.client(source)
        assert client.greeting.code == 421 and "come back in" in client.greeting.text
        await client.close()
        assert "127.0.0.3" in await _export_blocklist(tmp_path, store_url)
    finally:
        await env.close()


async def test_a_bot_rotating_senders_and_recipients_is_caught_by_its_pace(caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    env = await start_env()
    try:
        source = "127.0.0.4"  # host12345.example.net: S25R rule 2
        sessions, last = 0, None
        while sessions < 3000:  # fifty sessions a second of its clock, ten at a time
            batch = [
                rcpt(env, source, f"s{sessions + i}@spam.example", f"u{sessions + i}@example.com")
                for i in range(10)
            ]
            replies = await asyncio.gather(*batch)
            sessions += len(batch)
            env.clock.advance(0.2)
            last = replies[-1]
            if any(r.code == 421 for r in replies):
                break
        assert last is not None and any(r.code == 421 for r in replies), sessions
        assert sessions > 300 and sessions * 0.02 < 60  # past the allowance, within a minute
        lines = [r.getMessage() for r in caplog.records if r.name == "onajimi.decision"]
        penalty = [line for line in lines if "action=penalty" in line and "kind=" in line]
        assert penalty and "kind=pace" in penalty[0]
        assert not any("kind=early_retry" in line for line in lines)  # nothing was repeated
    finally:
        await env.close()


async def test_a_bounce_whose_decision_meets_a_busy_store_is_decided_again() -> None:
    from gateway.errors import StoreBusy

    env = await start_env({"policy": {"defer": "all"}})
    inner = env.gateway.store.inner
    update, failures = inner.update, [StoreBusy("contended")]

    async def busy_once(*args, **kwargs):
        if failures:
            raise failures.pop()
        return await update(*args, **kwargs)

    inner.update = busy_once
    try:
        client = await env.client("127.0.0.2")
        await client.ehlo("mx.example.org")
        assert (await client.cmd("MAIL FROM:<>")).code == 250
        assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
        busy = await client.cmd("DATA")
        assert busy.code == 451 and busy.text.startswith("4.3.0")
        again = await client.cmd("DATA")  # never a 354 without a decision
        assert again.code == 451 and "(ichigen)" in again.text
        await client.close()
        assert env.backend.messages == []
    finally:
        await env.close()


async def test_a_bounce_to_several_recipients_is_greylisted_for_each_triplet() -> None:
    env = await start_env({"policy": {"defer": "all", "key": "triplet", "auto_familiar_after": 0}})
    try:

        async def bounce(*recipients: str):
            client = await env.client("127.0.0.2")
            await client.ehlo("mx.example.org")
            replies = await client.send_mail("", list(recipients), MESSAGE)
            await client.close()
            return [r.code for r in replies]

        assert await bounce("bob@example.com") == [250, 250, 451]
        env.clock.advance(300)
        # bob's triplet is promoted, carol's is new: the message waits for carol's.
        assert await bounce("bob@example.com", "carol@example.com") == [250, 250, 250, 451]
        assert env.backend.messages == []
        env.clock.advance(300)
        assert await bounce("bob@example.com", "carol@example.com") == [250, 250, 250, 250]
        assert len(env.backend.messages) == 1
    finally:
        await env.close()


async def test_a_backlog_without_size_ten_a_session_is_not_boxed(caplog) -> None:
    """OpenSMTPD's flush of a backlog: no SIZE at MAIL, ten transactions a session (RSET
    after each deferral), the next session five seconds later; 200 notices from one
    sender to one address. Never counted, never boxed; its retry at 400 s passes."""
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    env = await start_env()
    try:
        source = "127.0.0.3"  # p1234-ip45.dyn.example.jp: S25R rule 1

        async def session(count: int) -> list[int]:
            client = await env.client(source)
            assert client.greeting.code == 220, client.greeting
            await client.ehlo("opensmtpd.example.jp")
            codes = []
            for _ in range(count):
                assert (await client.cmd("MAIL FROM:<notices@app.example.jp>")).code == 250
                reply = await client.cmd("RCPT TO:<bob@example.com>")
                codes.append(reply.code)
                if reply.code != 250:
                    await client.cmd("RSET")
                    continue
                assert (await client.data(MESSAGE)).code == 250
            await client.cmd("QUIT")
            await client.close()
            return codes

        for _ in range(20):
            assert await session(10) == [450] * 10
            env.clock.advance(5)
        env.clock.advance(400 - 100)
        assert await session(10) == [250] * 10
        assert len(env.backend.messages) == 10
        lines = [r.getMessage() for r in caplog.records if r.name == "onajimi.decision"]
        assert not any("reason=early_retry" in line or "penalty" in line for line in lines)
        deferred = [line for line in lines if "action=defer" in line]
        kinds = {line.split(" kind=")[1].split()[0] for line in deferred}
        assert kinds == {"first", "copy", "look_alike"} and len(deferred) == 200
        passed = [line.split(" reason=")[1].split()[0] for line in lines if "action=pass" in line]
        assert passed == ["promoted"] + ["familiar"] * 9  # one promotion, then familiar
    finally:
        await env.close()


async def test_a_bot_hammering_one_message_a_session_is_boxed_without_size() -> None:
    """The same bot as above but one message a session, no SIZE: boxed within half a
    minute, as with SIZE."""
    env = await start_env()
    try:
        source = "127.0.0.3"
        codes = [(await rcpt(env, source, "win@lottery.example", "bob@example.com", None)).code]
        elapsed = 0
        while codes[-1] != 421 and elapsed < 60:
            env.clock.advance(5)
            elapsed += 5
            reply = await rcpt(env, source, "win@lottery.example", "bob@example.com", None)
            codes.append(reply.code)
        assert codes[-1] == 421 and elapsed <= 30, codes
    finally:
        await env.close()
