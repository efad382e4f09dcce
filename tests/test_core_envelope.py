"""HELO, STARTTLS, MAIL and RCPT (smtp/core/envelope.py), without a socket."""

from __future__ import annotations

import pytest

from gateway.policy.decision import RcptDecision, Verdict
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import Action, Event, OnError, Reason
from gateway.relay.reply import BackendReply
from gateway.smtp.core.notes import BackendErrored, Decided, StoreTrouble
from gateway.smtp.session import (
    Decide,
    Phase,
    RelayRcpt,
    Say,
    SessionRules,
    StoreFault,
    Strike,
    Then,
)
from tests.sessions import (
    AUTH_OK,
    CLIENT,
    DEFER,
    OK,
    PASS,
    PENALTY,
    accepted,
    encrypted,
    in_transaction,
)

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_too_many_recipients() -> None:
    session = in_transaction(rules=SessionRules(max_recipients=1))
    accepted(session)
    assert session.rcpt("carol@example.com") == Say("452 4.5.3 Error: too many recipients")


def test_recipient_syntax_is_checked_before_the_policy() -> None:
    session = in_transaction()
    say = session.rcpt("not an address")
    assert isinstance(say, Say) and say.reply.startswith("501 ")


@pytest.mark.parametrize(("sender", "dry_run"), [("a@sender.example", False), ("<>", True)])
def test_the_null_sender_is_asked_about_without_recording(sender: str, dry_run: bool) -> None:
    session = in_transaction(sender)
    assert session.rcpt("bob@example.com") == Decide("bob@example.com", dry_run)


def test_a_deferral_at_rcpt_is_said_and_noted() -> None:
    session = in_transaction()
    decision = RcptDecision(DEFER, CLIENT)
    assert session.rcpt_decided("bob@example.com", decision) == Say("450 4.7.1 Try again later")
    assert session.notes == [Decided(DEFER, "a@sender.example", "bob@example.com", decision)]
    assert session.phase is Phase.MAIL


def test_the_penalty_box_at_rcpt_ends_the_session() -> None:
    session = in_transaction()
    say = session.rcpt_decided("bob@example.com", RcptDecision(PENALTY, CLIENT))
    assert say == Say("421 4.7.0 Too many retries", Then.CLOSE)
    assert session.phase is Phase.DROPPED


def test_mail_goes_to_the_backend_once_per_transaction() -> None:
    session = in_transaction()
    accepted(session)
    assert session.phase is Phase.RCPT
    relay = session.rcpt_decided("carol@example.com", RcptDecision(PASS, CLIENT))
    assert relay == RelayRcpt("carol@example.com", mail_first=False)


def test_a_backend_refusing_mail_is_mirrored_to_every_recipient() -> None:
    session = in_transaction()
    refused = BackendReply(550, "5.1.8 Bad sender")
    assert session.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT)) == RelayRcpt(
        "bob@example.com", mail_first=True
    )
    assert session.mail_relayed(refused) == Say("550 5.1.8 Bad sender")
    again = session.rcpt_decided("carol@example.com", RcptDecision(PASS, CLIENT))
    assert again == Say("550 5.1.8 Bad sender")


def test_a_backend_refusing_a_recipient_keeps_it_out() -> None:
    session = in_transaction()
    session.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT))
    session.mail_relayed(OK)
    unknown = BackendReply(550, "5.1.1 No such user")
    # An unknown recipient is a strike against the client (policy/strikes.py)...
    assert session.rcpt_relayed("bob@example.com", unknown) == Strike(
        Reason.AUTOBAN_PROBE, Say("550 5.1.1 No such user")
    )
    assert session.transaction.recipients == [] and session.phase is Phase.MAIL
    # ...but not against the null sender (a callback), nor for another refusal.
    callback = in_transaction("<>")
    assert callback.rcpt_relayed("bob@example.com", unknown) == Say("550 5.1.1 No such user")
    full = BackendReply(552, "5.2.2 Mailbox full")
    assert session.rcpt_relayed("carol@example.com", full) == Say("552 5.2.2 Mailbox full")


def test_the_operators_friends_and_users_are_never_struck() -> None:
    unknown = BackendReply(550, "5.1.1 No such user")
    friend = in_transaction(policy={"trusted_networks": [f"{CLIENT}/32"]})
    assert friend.rcpt_relayed("bob@example.com", unknown) == Say("550 5.1.1 No such user")
    user = encrypted()
    user.auth_answered("PLAIN", AUTH_OK)
    user.mail("a@example.com", [], False)
    assert user.rcpt_relayed("bob@example.com", unknown) == Say("550 5.1.1 No such user")
    stranger = in_transaction()
    refused = RcptDecision(Verdict(Action.REJECT, Reason.RELAY_DENIED, Reply(554, "5.7.1", "No")))
    assert stranger.rcpt_decided("x@elsewhere.example", refused) == Strike(
        Reason.AUTOBAN_RELAY, Say("554 5.7.1 No")
    )


def test_a_failed_backend_fails_the_rest_of_the_transaction() -> None:
    session = in_transaction()
    accepted(session)
    unavailable = BackendReply(451, "4.4.1 Delivery temporarily unavailable, try again later")
    say = session.backend_error(unavailable, "connection refused")
    assert say.reply.startswith("451 4.4.1")
    assert session.notes[-1] == BackendErrored("connection refused")
    again = session.rcpt_decided("carol@example.com", RcptDecision(PASS, CLIENT))
    assert isinstance(again, Say) and again.reply.startswith("451 4.4.1")
    data = session.data()
    assert isinstance(data, Say) and data.reply.startswith("451 4.4.1")


@pytest.mark.parametrize(
    ("on_error", "passes"), [(OnError.TEMPFAIL, False), (OnError.PASS, True)], ids=str
)
def test_a_store_outage_at_rcpt_follows_on_error(on_error: OnError, passes: bool) -> None:
    session = in_transaction(rules=SessionRules(on_error=on_error))
    out = session.rcpt_decided("bob@example.com", StoreFault.ERROR)
    assert session.notes == [StoreTrouble(Event.STORE_ERROR, "bob@example.com", on_error)]
    if passes:
        assert out == RelayRcpt("bob@example.com", mail_first=True)
        assert session.transaction.keys == {session.assessment.client_key}
    else:
        assert out == Say("451 4.3.0 Temporary local problem, try again later")


def test_a_busy_store_key_is_a_tempfail_even_when_outages_pass() -> None:
    session = in_transaction(rules=SessionRules(on_error=OnError.PASS))
    out = session.rcpt_decided("bob@example.com", StoreFault.BUSY)
    assert out == Say("451 4.3.0 Temporary local problem, try again later")
    assert session.notes[0].event is Event.STORE_BUSY


def test_rset_helo_and_starttls_end_the_transaction() -> None:
    for end in ("reset", "hello", "tls"):
        session = in_transaction()
        if end == "reset":
            session.reset()
        elif end == "hello":
            session.hello("again.example", esmtp=False)
        else:
            session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
        assert session.transaction is None
    assert session.phase is Phase.GREETED  # after STARTTLS, EHLO again
