"""The phase table (smtp/core/phases.py): every phase can end, nothing moves out of order."""

from __future__ import annotations

import pytest

from gateway.policy.decision import RcptDecision
from gateway.smtp.session import TRANSITIONS, Happening, Phase, RelayRcpt, SessionError
from tests.sessions import CLIENT, OK, PASS, connected, in_transaction

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


@pytest.mark.parametrize("phase", list(Phase), ids=str)
def test_every_phase_can_end(phase: Phase) -> None:
    """A 421 or a hang-up can come at any moment; nothing is left open after CLOSED."""
    assert TRANSITIONS[phase][Happening.CLOSE] is Phase.CLOSED
    assert Happening.DROP in TRANSITIONS[phase]


def test_a_late_answer_after_the_session_ended_changes_nothing() -> None:
    session = in_transaction()
    relay = session.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT))
    assert isinstance(relay, RelayRcpt)
    session.timed_out()  # the 421 goes out while the backend is still answering
    session.mail_relayed(OK)
    session.rcpt_relayed("bob@example.com", OK)
    assert session.phase is Phase.DROPPED
    session.quit()
    session.hello("late.example", esmtp=True)
    assert session.phase is Phase.CLOSED


def test_no_transaction_before_hello() -> None:
    session = connected()
    with pytest.raises(SessionError):
        session.mail("a@sender.example", [], False)


def test_data_only_after_an_accepted_recipient() -> None:
    session = in_transaction()
    with pytest.raises(SessionError):
        session.end_of_data()
