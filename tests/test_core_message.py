"""DATA and the message (smtp/core/message.py), without a socket."""

from __future__ import annotations

import pytest

from gateway.policy import replies
from gateway.policy.decision import RcptDecision
from gateway.policy.net import client_address
from gateway.policy.vocabulary import BareNewline, RelayResult
from gateway.relay.reply import BackendReply
from gateway.smtp.core.message import Problem
from gateway.smtp.core.notes import BackendErrored, Decided, Normalized, Relayed
from gateway.smtp.session import (
    Decide,
    Deliver,
    Phase,
    RelayRcpt,
    Say,
    SessionRules,
    StoreFault,
    Then,
)
from tests.sessions import (
    AUTH_OK,
    CLIENT,
    CONFIRMED,
    DEFER,
    FAMILIAR,
    NOW,
    OK,
    PENALTY,
    QUEUED,
    accepted,
    connected,
    encrypted,
    in_transaction,
)

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_the_null_sender_is_mirrored_at_rcpt_and_deferred_at_data() -> None:
    session = in_transaction("<>")
    relay = session.rcpt_decided("bob@example.com", RcptDecision(DEFER, CLIENT))
    assert relay == RelayRcpt("bob@example.com", mail_first=True)
    assert session.notes == []  # a callback leaves nothing behind
    session.mail_relayed(OK)
    session.rcpt_relayed("bob@example.com", OK)
    assert session.data() == Decide("bob@example.com", dry_run=False)
    assert session.data_decided("bob@example.com", RcptDecision(DEFER, CLIENT)) is None
    assert session.data() == Say("451 4.7.1 Try again later")
    assert session.data() == Say("451 4.7.1 Try again later")  # said again, not decided again
    assert [type(note) for note in session.notes] == [Decided]


def test_a_store_outage_at_data_asks_again_at_the_next_data() -> None:
    session = in_transaction("<>")
    session.rcpt_decided("bob@example.com", RcptDecision(DEFER, CLIENT))
    session.mail_relayed(OK)
    session.rcpt_relayed("bob@example.com", OK)
    ask = session.data()
    assert session.data_decided(ask.recipient, StoreFault.ERROR) == Say(
        "451 4.3.0 Temporary local problem, try again later"
    )
    assert session.data() == ask


def test_the_penalty_box_at_data_ends_the_session() -> None:
    session = in_transaction("<>")
    session.rcpt_decided("bob@example.com", RcptDecision(PENALTY, CLIENT))
    session.mail_relayed(OK)
    session.rcpt_relayed("bob@example.com", OK)
    session.data()
    say = session.data_decided("bob@example.com", RcptDecision(PENALTY, CLIENT))
    assert say == Say("421 4.7.0 Too many retries", Then.CLOSE)


def test_data_opens_when_nothing_stands_in_the_way() -> None:
    session = in_transaction()
    accepted(session)
    assert session.data() is None
    assert session.phase is Phase.DATA


def test_the_message_gets_a_received_header() -> None:
    session = in_transaction()
    accepted(session)
    session.data()
    out = session.message(b"Subject: hi\r\n\r\nbody\r\n", NOW)
    assert isinstance(out, Deliver)
    header = out.content.split(b"\r\n\t", 1)[0]
    assert header.startswith(b"Received: from mail.example.org (mail.example.org [192.0.2.9])")
    assert session.transaction.id.encode() in out.content
    assert b"for <bob@example.com>" in out.content
    assert out.content.endswith(b"Subject: hi\r\n\r\nbody\r\n")


def test_smuggling_is_refused_in_reject_mode() -> None:
    session = in_transaction()
    accepted(session)
    session.data()
    out = session.message(b"a\n.\nMAIL FROM:<x@y>\r\n", NOW)
    assert isinstance(out, Say) and out.reply.startswith("550 5.5.2")
    note = session.notes[-1]
    assert isinstance(note, Relayed) and note.result is RelayResult.REJECTED


def test_smuggling_is_repaired_in_normalize_mode() -> None:
    rules = SessionRules(bare_newline=BareNewline.NORMALIZE, add_received=False)
    session = in_transaction(rules=rules)
    accepted(session)
    session.data()
    out = session.message(b"a\n.\nb\x00\r\n", NOW)
    assert out == Deliver(b"a\r\n.\r\nb\r\n")
    assert session.notes[-2:] == [Normalized("nul"), Normalized("bare_newline")]


@pytest.mark.parametrize(
    ("reply", "failure", "result"),
    [
        (QUEUED, None, RelayResult.DELIVERED),
        (BackendReply(452, "4.2.2 Mailbox full"), None, RelayResult.TEMPFAIL),
        (BackendReply(554, "5.7.1 Spam"), None, RelayResult.REJECTED),
        (BackendReply(451, "4.4.1 unavailable"), "timed out", RelayResult.BACKEND_ERROR),
    ],
    ids=str,
)
def test_the_end_of_data_is_the_backends_reply(reply, failure, result) -> None:
    session = in_transaction()
    accepted(session)
    session.data()
    session.message(b"x\r\n", NOW)
    say = session.delivered(reply, 0.01, failure)
    assert say.reply == reply.as_smtp()
    relayed = session.notes[-1]
    assert isinstance(relayed, Relayed) and relayed.result is result
    assert (BackendErrored(failure) in session.notes) is (failure is not None)
    session.end_of_data()
    assert session.phase is Phase.HELLO and session.transaction is None


def test_familiar_keys_are_refreshed_only_by_an_accepted_delivery() -> None:
    for reply, refreshed in ((QUEUED, {"fam-key"}), (BackendReply(452, "4.2.2 full"), set())):
        session = in_transaction()
        session.rcpt_decided("bob@example.com", RcptDecision(FAMILIAR, "fam-key"))
        session.mail_relayed(OK)
        session.rcpt_relayed("bob@example.com", OK)
        session.data()
        session.message(b"x\r\n", NOW)
        assert session.delivered(reply, 0.01).refresh == refreshed


@pytest.mark.parametrize(
    ("problem", "reply"),
    [(Problem.TOO_LONG, replies.LINE_TOO_LONG), (Problem.TOO_BIG, replies.TOO_MUCH_DATA)],
)
def test_a_message_the_framer_gave_up_on_is_refused(problem: Problem, reply: str) -> None:
    """A line too long or too much data: refused at the end of data. Logged in, the
    session then ends (the backend connection it used cannot end its transaction)."""
    plain = in_transaction()
    accepted(plain)
    assert plain.data() is None
    assert plain.message_complete(2048, problem) == Say(reply, Then.GO_ON)
    user = encrypted()
    user.auth_answered("PLAIN", AUTH_OK)
    user.mail("a@example.com", [], False)
    assert user.message_complete(2048, problem) == Say(reply, Then.CLOSE)


def test_data_needs_a_helo_a_recipient_and_no_argument() -> None:
    """DATA's order and syntax are the core's, before anything is decided."""
    session = connected()
    screening = session.policy.screen(client_address(CLIENT))
    session.connect_facts(screening, None)
    session.rdns_known(CONFIRMED)
    assert session.data_command("") == Say("503 Error: send HELO first")
    session.hello("mail.example.org", esmtp=True)
    assert session.data_command("") == Say("503 Error: need RCPT command")
    session.mail("a@sender.example", [], False)
    assert session.data_command("") == Say("503 Error: need RCPT command")
    accepted(session)
    assert session.data_command("now") == Say("501 Syntax: DATA")
    assert session.data_command("") is None
    session.timed_out()
    assert session.data_command("") == Say("421 4.4.2 Connection lost", Then.CLOSE)
