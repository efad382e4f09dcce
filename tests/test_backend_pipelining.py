"""Issue 13 part 3: fewer round trips to the backend. Command groups written once when
the backend offers PIPELINING (RFC 2920), never where it does not; and with
`backend.reuse` (XFORWARD only), one backend connection for client after client."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import ConfigError
from tests.backend import FakeBackend
from tests.gatewayenv import env_settings, start_env
from tests.waiting import eventually

BODY = b"Subject: pipelined\r\n\r\nHello.\r\n"
ENVELOPE = b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"


async def pipelined_envelope(env, source: str = "127.0.0.2"):
    """EHLO, then MAIL, RCPT and DATA in one write, as Postfix's own client sends them:
    the client, and the codes of MAIL, RCPT and DATA."""
    client = await env.client(source)
    await client.ehlo()
    await client.send(ENVELOPE)
    return client, [(await client.read_reply()).code for _ in range(3)]


async def pipelined_session(env, source: str = "127.0.0.2", body: bytes = BODY) -> list[int]:
    """The pipelined envelope, the content after the 354, QUIT: the codes of MAIL, RCPT,
    DATA and the end of data."""
    client, codes = await pipelined_envelope(env, source)
    if codes[-1] == 354:
        await client.send(body + b".\r\n")
        codes.append((await client.read_reply()).code)
    await client.cmd("QUIT")
    await client.close()
    return codes


def groups_of(backend: FakeBackend) -> list[list[str]]:
    """The backend's reads since the gateway's start-up probe (EHLO, QUIT)."""
    groups = [group for group in backend.groups if group]
    assert groups[:2] == [["EHLO"], ["QUIT"]]
    return groups[2:]


def connections(backend: FakeBackend) -> int:
    return backend.connections - 1  # the start-up probe's


async def test_the_envelope_goes_to_the_backend_in_one_write(env) -> None:
    assert await pipelined_session(env) == [250, 250, 354, 250]
    (message,) = env.backend.messages
    assert message.data.endswith(BODY)
    assert groups_of(env.backend) == [
        ["EHLO"],
        ["XCLIENT"],  # it takes the backend back to its greeting: nothing may follow
        ["EHLO"],
        ["MAIL", "RCPT", "DATA"],
        ["QUIT"],
    ]


async def test_data_is_sent_alone_when_the_client_waits_for_each_reply(env) -> None:
    client = await env.client()
    await client.ehlo()
    assert [
        r.code for r in await client.send_mail("a@sender.example", ["bob@example.com"], BODY)
    ] == [250, 250, 250]
    await client.close()
    assert groups_of(env.backend)[3:5] == [["MAIL", "RCPT"], ["DATA"]]


async def test_each_later_recipient_and_data_in_one_write(env) -> None:
    client = await env.client()
    await client.ehlo()
    await client.send(
        b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<bob@example.com>\r\n"
        b"RCPT TO:<carol@example.com>\r\nDATA\r\n"
    )
    assert [(await client.read_reply()).code for _ in range(4)] == [250, 250, 250, 354]
    await client.send(BODY + b".\r\n")
    assert (await client.read_reply()).code == 250
    await client.close()
    assert groups_of(env.backend)[3:5] == [["MAIL", "RCPT"], ["RCPT", "DATA"]]
    (message,) = env.backend.messages
    assert message.recipients == ["bob@example.com", "carol@example.com"]


async def test_a_backend_without_pipelining_gets_one_command_at_a_time() -> None:
    backend = FakeBackend()
    backend.extensions.remove("PIPELINING")
    await backend.start()
    env = await start_env(backend=backend)
    try:
        assert await pipelined_session(env) == [250, 250, 354, 250]
        assert max(len(group) for group in groups_of(backend)) == 1
        assert len(backend.messages) == 1
    finally:
        await env.close()


async def test_a_data_the_client_never_used_is_never_completed(env) -> None:
    """The backend refuses the only recipient after DATA went with it: the client's DATA
    gets 503 here, and the backend's waiting DATA costs its connection (no dot may end
    it), so the next transaction delivers exactly its own message."""
    env.backend.refuse["bob@example.com"] = "550 5.1.1 <bob@example.com>: User unknown"
    client, codes = await pipelined_envelope(env)
    assert codes == [250, 550, 503]
    assert (await client.cmd("RSET")).code == 250
    replies = await client.send_mail("a@sender.example", ["carol@example.com"], BODY)
    assert [r.code for r in replies] == [250, 250, 250]
    await client.close()
    (message,) = env.backend.messages
    assert message.recipients == ["carol@example.com"]
    assert connections(env.backend) == 2


async def test_a_refused_sender_in_a_group_is_the_answer_to_rcpt(env) -> None:
    env.backend.faults["MAIL"] = "553 5.7.1 <alice@sender.example>: Sender address rejected"
    assert (await pipelined_session(env))[:2] == [250, 553]
    assert env.backend.messages == []


# -- backend.reuse ------------------------------------------------------------------------
REUSE = {"backend": {"forward_client": "xforward", "reuse": True, "reuse_idle": 5}}


@pytest.mark.gateway(REUSE)
async def test_clients_one_after_another_share_one_backend_connection(env) -> None:
    env.backend.extensions.append("XFORWARD NAME ADDR PROTO HELO")
    for source in ("127.0.0.2", "127.0.0.14", "127.0.0.2"):
        assert await pipelined_session(env, source) == [250, 250, 354, 250]
    assert connections(env.backend) == 1
    metric = env.gateway.metrics.registry.get_sample_value
    assert metric("onajimi_backend_connections_total", {"how": "opened"}) == 1
    assert metric("onajimi_backend_connections_total", {"how": "reused"}) == 2
    first, second, third = env.backend.messages
    assert first.xforward["ADDR"] == "127.0.0.2" and second.xforward["ADDR"] == "127.0.0.14"
    assert third.xforward["ADDR"] == "127.0.0.2"
    assert env.backend.commands.count("QUIT") == 1  # the probe's: this one is kept
    # A kept connection is proven by an RSET of its own before the next client's group.
    assert groups_of(env.backend)[1:] == [
        ["XFORWARD", "MAIL", "RCPT", "DATA"],
        ["RSET"],
        ["XFORWARD", "MAIL", "RCPT", "DATA"],
        ["RSET"],
        ["XFORWARD", "MAIL", "RCPT", "DATA"],
    ]


@pytest.mark.gateway(REUSE)
async def test_a_kept_connection_the_backend_closed_is_replaced(env) -> None:
    assert await pipelined_session(env) == [250, 250, 354, 250]
    await eventually(lambda: len(env.gateway.backend_pool) == 1)
    for session in env.backend.sessions:  # the backend's idle timeout, say
        session.transport.close()
    await eventually(lambda: not next(iter(env.gateway.backend_pool._idle))[0].usable)
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    assert connections(env.backend) == 2 and len(env.backend.messages) == 2


@pytest.mark.gateway(REUSE)
async def test_a_kept_connection_that_dies_on_use_is_replaced_and_nothing_is_sent_twice(
    env,
) -> None:
    assert await pipelined_session(env) == [250, 250, 354, 250]
    await eventually(lambda: len(env.gateway.backend_pool) == 1)
    env.backend.faults["RSET"] = "drop"  # it reads the group, then the connection is gone
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    del env.backend.faults["RSET"]
    assert connections(env.backend) == 2
    assert [m.xforward.get("ADDR") for m in env.backend.accepted] == ["127.0.0.2", "127.0.0.14"]


@pytest.mark.gateway({"backend": {**REUSE["backend"], "reuse_idle": 0.2}})
async def test_an_idle_kept_connection_is_closed_after_reuse_idle(env) -> None:
    assert await pipelined_session(env) == [250, 250, 354, 250]
    await eventually(lambda: env.backend.commands[-1:] == ["QUIT"], timeout=5)
    assert len(env.gateway.backend_pool) == 0
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    assert connections(env.backend) == 2


@pytest.mark.gateway(REUSE)
async def test_a_client_gone_mid_message_never_lends_its_connection(env) -> None:
    client, codes = await pipelined_envelope(env)
    assert codes == [250, 250, 354]
    await client.send(b"Subject: half\r\n\r\nonly half of it")
    await asyncio.sleep(0.1)
    await client.close()
    await eventually(lambda: env.backend.sessions[0].transport.is_closing())
    assert len(env.gateway.backend_pool) == 0
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    (message,) = env.backend.accepted  # the half message was never ended by anyone
    assert message.data.endswith(BODY) and b"only half" not in message.data


@pytest.mark.gateway(REUSE)
async def test_a_connection_auth_was_tried_on_is_never_kept(env) -> None:
    env.gateway.capabilities.learn({"auth": "PLAIN"})  # the fake backend answers 502
    backend = env.gateway.services  # the session's own BackendSession, as the server makes it
    from gateway.relay.backend import BackendSession, ClientIdentity

    session = BackendSession(
        backend.backend,
        ClientIdentity("127.0.0.2", None, None, False, "client.example", True),
        backend.capabilities,
        backend.backend_pool,
    )
    reply = await session.authenticate("PLAIN", b"AGJvYgBzZWNyZXQ=")
    assert reply.code == 502
    session.release()
    assert len(env.gateway.backend_pool) == 0
    await eventually(lambda: "QUIT" in env.backend.commands)


async def test_reuse_needs_xforward_or_nothing(dns_server) -> None:
    backend = FakeBackend()
    backend.port = 10025
    for mode in ("auto", "xclient"):
        with pytest.raises(ConfigError, match=r"backend\.reuse: needs backend\.forward_client"):
            env_settings(dns_server, backend, {"backend": {"reuse": True, "forward_client": mode}})
    assert env_settings(
        dns_server, backend, {"backend": {"reuse": True, "forward_client": "off"}}
    ).backend.reuse


@pytest.mark.gateway(REUSE)
async def test_a_client_gone_while_its_group_is_answered_never_lends_its_connection(
    env,
) -> None:
    """The client hangs up while the backend is still answering its MAIL/RCPT/DATA (a
    slow recipient check): those replies are on their way, so the connection must not
    serve the next client, whose own commands would otherwise become that message."""
    assert await pipelined_session(env) == [250, 250, 354, 250]
    await eventually(lambda: len(env.gateway.backend_pool) == 1)
    env.backend.faults["MAIL"] = "late:0.5:250 2.1.0 Ok"  # a slow sender check
    client = await env.client()
    await client.ehlo()
    await client.send(b"MAIL FROM:<b@sender.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
    await asyncio.sleep(0.2)
    await client.close()
    await asyncio.sleep(0.1)
    assert len(env.gateway.backend_pool) == 0
    del env.backend.faults["MAIL"]
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    await asyncio.sleep(0.6)  # the slow replies would have come by now
    delivered = [(m.sender, m.recipients, m.xforward.get("ADDR")) for m in env.backend.accepted]
    assert delivered == [
        ("alice@sender.example", ["bob@example.com"], "127.0.0.2"),
        ("alice@sender.example", ["bob@example.com"], "127.0.0.14"),
    ]
    assert all(b"MAIL FROM" not in m.data for m in env.backend.accepted)


async def test_a_recipient_after_the_connection_was_lost_gets_451_not_a_new_connection(
    env,
) -> None:
    """MAIL went on a connection that is gone: the next RCPT on a new one would meet
    `503 need MAIL` (a bounce) or make a message without the recipients before."""
    client = await env.client()
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<a@sender.example>")).code == 250
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    for session in env.backend.sessions[1:]:  # a backend restart
        session.transport.close()
    await asyncio.sleep(0.1)
    refused = await client.cmd("RCPT TO:<carol@example.com>")
    assert refused.code == 451 and refused.text.startswith("4.4.1")
    assert (await client.cmd("DATA")).code == 451
    await client.close()
    assert env.backend.accepted == [] and connections(env.backend) == 1


@pytest.mark.gateway(
    {"backend": {**REUSE["backend"], "connect_timeout": 0.5, "command_timeout": 60}}
)
async def test_a_kept_connection_gone_silent_is_given_up_after_connect_timeout(env) -> None:
    """No FIN, no reply (the backend host rebooted): the RSET that opens the group is
    waited for connect_timeout, not command_timeout, then a fresh connection serves."""
    assert await pipelined_session(env) == [250, 250, 354, 250]
    await eventually(lambda: len(env.gateway.backend_pool) == 1)
    env.backend.faults["RSET"] = "hang"
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]  # within 10 s
    assert connections(env.backend) == 2
    assert [m.xforward.get("ADDR") for m in env.backend.accepted] == ["127.0.0.2", "127.0.0.14"]


async def test_after_a_refused_data_the_next_transaction_starts_with_rset(env) -> None:
    """A refused DATA leaves the backend's transaction open (Postfix resets nothing): the
    next MAIL must follow an RSET, or Postfix says "503 nested MAIL command"."""
    env.backend.faults["DATA"] = "554 5.7.1 Refused by a DATA restriction"
    client = await env.client()
    await client.ehlo()
    replies = await client.send_mail("a@sender.example", ["bob@example.com"], BODY)
    assert [r.code for r in replies] == [250, 250, 554]
    del env.backend.faults["DATA"]
    assert (await client.cmd("RSET")).code == 250
    replies = await client.send_mail("a@sender.example", ["carol@example.com"], BODY)
    assert [r.code for r in replies] == [250, 250, 250]
    await client.close()
    mails = [n for n, c in enumerate(env.backend.commands) if c.startswith("MAIL")]
    assert env.backend.commands[mails[1] - 1] == "RSET"
    (message,) = env.backend.messages
    assert message.recipients == ["carol@example.com"]


@pytest.mark.gateway(REUSE)
async def test_a_client_that_leaves_before_data_still_lends_its_connection(env) -> None:
    """Every recipient deferred, then QUIT: the MAIL the backend has open ends with the
    RSET the next user sends first, so the connection is kept, not dropped."""
    client = await env.client()
    await client.ehlo()
    assert (await client.cmd("MAIL FROM:<a@sender.example>")).code == 250
    assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
    await client.cmd("QUIT")
    await client.close()
    await eventually(lambda: len(env.gateway.backend_pool) == 1)
    assert await pipelined_session(env, "127.0.0.14") == [250, 250, 354, 250]
    assert connections(env.backend) == 1
    (message,) = env.backend.messages
    assert message.xforward["ADDR"] == "127.0.0.14" and message.sender == "alice@sender.example"
