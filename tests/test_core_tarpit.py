"""The tarpit (smtp/core/tarpit.py): a suspect's deferral held, waited out or hung up on."""

from __future__ import annotations

import pytest

from gateway.policy.decision import RcptDecision, Verdict
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import Action, Reason, SuspectAction, TarpitResult
from gateway.smtp.core.notes import Decided, TarpitEnded
from gateway.smtp.session import Promote, RelayRcpt, Say, SessionRules, Tarpit
from tests.sessions import CLIENT, OK, PASS, deferred, in_transaction, suspect_in_transaction

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_a_suspects_deferral_is_held_then_passes_and_is_promoted() -> None:
    session = suspect_in_transaction("tarpit")
    assert session.rcpt_decided("bob@example.com", deferred()) == Tarpit(30, "bob@example.com")
    out = session.tarpit_waited("bob@example.com")
    assert out == Promote(CLIENT, RelayRcpt("bob@example.com", mail_first=True))
    # The session's next recipient passes too, held no more and promoted already.
    session.mail_relayed(OK)
    session.rcpt_relayed("bob@example.com", OK)
    later = session.rcpt_decided("carol@example.com", deferred())
    assert later == RelayRcpt("carol@example.com", mail_first=False)
    reasons = [n.verdict.reason for n in session.notes if isinstance(n, Decided)]
    assert reasons == [Reason.TARPIT, Reason.TARPIT]
    assert TarpitEnded(TarpitResult.WAITED, 30) in session.notes


def test_tarpit_then_defer_holds_and_then_defers() -> None:
    session = suspect_in_transaction("tarpit+defer")
    assert isinstance(session.rcpt_decided("bob@example.com", deferred()), Tarpit)
    assert session.tarpit_waited("bob@example.com") == Say("450 4.7.1 Try again later")
    # One hold per session: the next recipient is deferred at once.
    assert session.rcpt_decided("carol@example.com", deferred()) == Say("450 4.7.1 Try again later")


def test_no_room_in_the_tarpit_is_the_plain_deferral() -> None:
    session = suspect_in_transaction("tarpit")
    session.rcpt_decided("bob@example.com", deferred())
    assert session.tarpit_full("bob@example.com") == Say("450 4.7.1 Try again later")
    assert session.rcpt_decided("carol@example.com", deferred()) == Say("450 4.7.1 Try again later")


def test_a_hang_up_in_the_tarpit_names_the_key_once() -> None:
    session = suspect_in_transaction("tarpit")
    session.rcpt_decided("bob@example.com", deferred())
    assert session.tarpit_abandoned() == CLIENT
    assert session.tarpit_abandoned() is None
    (gave_up,) = [n for n in session.notes if isinstance(n, Decided)]
    assert (
        gave_up.verdict.action is Action.DEFER and gave_up.verdict.detail == "hung up in the tarpit"
    )


def test_only_suspects_meet_the_tarpit() -> None:
    clean = in_transaction()  # passes: nothing to hold
    clean.rules = SessionRules(hostname="gw.test", suspect_action=SuspectAction.TARPIT)
    assert isinstance(clean.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT)), RelayRcpt)
    stranger = in_transaction(policy={"defer": "all", "trusted_networks": []})
    stranger.rules = SessionRules(hostname="gw.test", suspect_action=SuspectAction.TARPIT)
    ichigen = Verdict(Action.DEFER, Reason.ICHIGEN, Reply(450, "4.7.1", "Try again later"))
    out = stranger.rcpt_decided("bob@example.com", RcptDecision(ichigen, CLIENT))
    assert out == Say("450 4.7.1 Try again later")  # a clean ichigen-san is no suspect
