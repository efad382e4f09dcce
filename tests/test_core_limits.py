"""Junk commands, timeouts, internal errors (smtp/core/limits.py)."""

from __future__ import annotations

import pytest

from gateway.policy.vocabulary import Limit
from gateway.smtp.core.notes import LimitReached
from gateway.smtp.session import Phase, Say, Then
from tests.sessions import accepted, greeted, in_transaction

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_junk_commands_end_the_session_and_mail_restarts_the_count() -> None:
    session = greeted()
    assert session.junk_command(2) is None
    assert session.junk_command(2) is None
    session.mail("a@sender.example", [], False)
    assert session.junk_command(2) is None
    assert session.junk_command(2) is None
    say = session.junk_command(2)
    assert say == Say("421 4.7.0 gw.test Error: too many commands that do nothing", Then.CLOSE)
    assert session.notes[-1] == LimitReached(Limit.JUNK_COMMANDS)


def test_a_timeout_says_421_and_drops() -> None:
    session = greeted()
    assert session.timed_out() == Say("421 4.4.2 gw.test Error: timeout exceeded", Then.CLOSE)
    assert session.phase is Phase.DROPPED
    assert session.notes[-1] == LimitReached(Limit.COMMAND_TIMEOUT)


def test_an_internal_error_fails_the_transaction() -> None:
    session = in_transaction()
    accepted(session)
    assert session.internal_error().reply.startswith("451 4.3.0")
    data = session.data()
    assert isinstance(data, Say) and data.reply.startswith("451 4.4.1")


def test_an_internal_error_mid_data_leaves_data_refused_not_reopened() -> None:
    """aiosmtpd skips its post-DATA reset when the DATA hook raises: the next DATA must
    meet the failed transaction (451), not a second 354 to a backend that was aborted."""
    session = in_transaction()
    accepted(session)
    assert session.data() is None
    session.internal_error()
    assert session.phase is Phase.RCPT
    data = session.data()
    assert isinstance(data, Say) and data.reply.startswith("451 4.4.1")
