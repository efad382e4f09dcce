"""SMTP AUTH (smtp/core/auth.py): when it may start, its syntax, how it ended."""

from __future__ import annotations

import pytest

from gateway.policy import replies
from gateway.policy.decision import Verdict
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import Action, AuthResult, Reason
from gateway.relay.reply import BackendReply
from gateway.smtp.core.notes import AuthEnded, Decided
from gateway.smtp.session import (
    SASL_LINE_LIMIT,
    Phase,
    RelayAuth,
    RelayRcpt,
    Say,
    SessionRules,
    Strike,
    Then,
    sasl_syntax,
)
from tests.sessions import AUTH_OK, AUTH_REFUSED, MECHANISMS, OK, connected, encrypted, greeted

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_auth_is_relayed_only_over_tls_after_ehlo_outside_a_transaction() -> None:
    plain = greeted()
    assert plain.auth("PLAIN", ()) == Say(replies.NO_AUTH)  # the backend offers none
    assert plain.auth("PLAIN", MECHANISMS) == Say(replies.AUTH_NEEDS_TLS)
    session = greeted()
    session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert session.auth("PLAIN", MECHANISMS) == Say(replies.AUTH_NEEDS_EHLO)
    session.hello("laptop.example", esmtp=False)  # HELO: no extensions
    assert session.auth("PLAIN", MECHANISMS) == Say(replies.AUTH_NEEDS_EHLO)
    session.hello("laptop.example", esmtp=True)
    assert session.auth("CRAM-MD5", MECHANISMS) == Say(replies.AUTH_MECHANISM)
    session.mail("a@example.com", [], False)
    assert session.auth("PLAIN", MECHANISMS) == Say(replies.AUTH_IN_TRANSACTION)
    session.reset()
    assert session.auth("PLAIN", MECHANISMS) == RelayAuth("PLAIN")


def test_an_authenticated_session_goes_to_the_backend_unscreened() -> None:
    session = encrypted()
    assert session.auth_answered("PLAIN", AUTH_OK) == Say("235 2.7.0 Authentication successful")
    assert session.auth("LOGIN", MECHANISMS) == Say(replies.AUTH_AGAIN)
    session.mail("<>", [], False)  # even the null sender is not decided at DATA
    out = session.rcpt("bob@elsewhere.example")  # no relay check: the backend's call
    assert out == RelayRcpt("bob@elsewhere.example", mail_first=True)
    decided = [n for n in session.notes if isinstance(n, Decided)]
    assert [d.verdict.reason for d in decided] == [Reason.AUTHENTICATED]
    assert session.mail_relayed(OK) is None
    refused = BackendReply(554, "5.7.1 <bob@elsewhere.example>: Relay access denied")
    assert session.rcpt_relayed("bob@elsewhere.example", refused).reply.startswith("554")


def test_a_refused_login_is_counted_and_mirrored() -> None:
    session = encrypted()
    out = session.auth_answered("PLAIN", AUTH_REFUSED)
    assert out == Strike(Reason.AUTH_FAILURES, Say(AUTH_REFUSED.as_smtp()))
    assert session.strike_counted(out, 1, None).reply.startswith("535 5.7.8")
    assert session.phase is Phase.HELLO and session.authenticated is None
    ended = [n for n in session.notes if isinstance(n, AuthEnded)]
    assert ended == [AuthEnded("PLAIN", AuthResult.FAILED, 535)]


def test_a_cancel_or_a_tempfail_is_not_a_failed_guess() -> None:
    session = encrypted()
    cancelled = BackendReply(501, "5.7.0 Authentication aborted")
    assert session.auth_answered("LOGIN", cancelled) == Say(cancelled.as_smtp())
    tempfail = BackendReply(454, "4.7.0 Temporary authentication failure")
    assert session.auth_answered("LOGIN", tempfail) == Say(tempfail.as_smtp())
    assert session.auth_failures == 0


def test_the_penalty_box_ends_the_session_with_its_reply() -> None:
    session = encrypted()
    penalty = Verdict(
        Action.PENALTY, Reason.AUTH_FAILURES, Reply(421, "4.7.0", "Too many failed authentications")
    )
    strike = session.auth_answered("PLAIN", AUTH_REFUSED)
    out = session.strike_counted(strike, 5, penalty)
    assert out == Say("421 4.7.0 Too many failed authentications", Then.CLOSE)
    assert session.phase is Phase.DROPPED


def test_the_session_limit_holds_without_the_store() -> None:
    session = encrypted(SessionRules(hostname="gw.test", auth_limit=2))
    for _ in range(2):
        strike = session.auth_answered("PLAIN", AUTH_REFUSED)
        out = session.strike_counted(strike, 0, None)  # the store could not count
    assert out == Say(replies.too_many_auth_failures("gw.test"), Then.CLOSE)


def test_starttls_forgets_an_authentication() -> None:
    session = encrypted()
    session.auth_answered("PLAIN", AUTH_OK)
    session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")  # RFC 3207: start over
    assert session.authenticated is None


def test_helo_starttls_and_auth_syntax_are_the_core_s() -> None:
    session = connected()
    assert session.hello_refused("", esmtp=False) == Say(replies.HELO_SYNTAX)
    assert session.hello_refused("bad\x01name", esmtp=True) == Say(replies.EHLO_SYNTAX)
    assert session.hello_refused("x" * 256, esmtp=False) == Say(replies.HELO_SYNTAX)
    assert session.hello_refused("mail.example.org", esmtp=True) is None
    user = encrypted()
    assert user.starttls() == Say(replies.TLS_ALREADY)  # RFC 3207: once
    assert greeted().starttls() is None
    assert user.auth_initial("PLAIN", "AGJvYgBzZWNyZXQ=") is None
    assert user.auth_initial("PLAIN", "=") is None and user.auth_initial("LOGIN", "*") is None
    assert user.auth_initial("PLAIN", "not base64!") == Say(replies.AUTH_SYNTAX)
    assert sasl_syntax(b"A" * SASL_LINE_LIMIT) and not sasl_syntax(b"A" * (SASL_LINE_LIMIT + 1))


def test_every_auth_counts_as_a_command_without_progress() -> None:
    user = encrypted()
    for _ in range(3):
        assert isinstance(user.auth_command("CRAM-MD5", MECHANISMS, junk_limit=3), Say)
    dropped = user.auth_command("PLAIN", MECHANISMS, junk_limit=3)
    assert dropped.then is Then.CLOSE and dropped.reply.startswith("421")
