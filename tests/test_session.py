"""The session core's rules, phase by phase, without a socket (h11's test_state style).

Facts go in as values (a Screening, an RDNS, an RcptDecision, a BackendReply); what the
session says and asks for comes out. The adapter's wiring is tests/test_smtp_server.py.
"""

from __future__ import annotations

import pytest

from gateway.assembly import build_policy
from gateway.policy import replies
from gateway.policy.decision import RcptDecision, Verdict
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import (
    Action,
    AuthResult,
    Event,
    Limit,
    OnError,
    Reason,
    RelayResult,
    TarpitResult,
)
from gateway.relay.reply import BackendReply
from gateway.smtp.session import (
    GREET,
    REFUSED_COMMANDS,
    SASL_LINE_LIMIT,
    TRANSITIONS,
    AuthEnded,
    BackendTrouble,
    Decide,
    Decided,
    Deliver,
    Happening,
    LimitReached,
    LookUp,
    Phase,
    Promote,
    RelayAuth,
    Relayed,
    RelayRcpt,
    Repaired,
    Say,
    Session,
    SessionError,
    SessionRules,
    StoreFault,
    StoreTrouble,
    Strike,
    Tarpit,
    TarpitEnded,
    Then,
    sasl_syntax,
)
from tests.conftest import make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

CLIENT = "192.0.2.9"
NOW = 1_800_000_000.0
OK = BackendReply(250, "2.1.5 Ok")
QUEUED = BackendReply(250, "2.0.0 Ok: queued as ABC")
DEFER = Verdict(Action.DEFER, Reason.S25R_RULE1, Reply(450, "4.7.1", "Try again later"))
PASS = Verdict(Action.PASS, Reason.CLEAN)
FAMILIAR = Verdict(Action.PASS, Reason.FAMILIAR)
PENALTY = Verdict(Action.PENALTY, Reason.IMPATIENT, Reply(421, "4.7.0", "Too many retries"))
CONFIRMED = RDNS(RDNSStatus.CONFIRMED, ("mail.example.org",), ("mail.example.org",))


def policy(**sections):
    return build_policy(make_settings(sections))


def connected(rules: SessionRules | None = None, **sections) -> Session:
    """A session admitted by the limits, its connect facts not yet in."""
    session = Session(policy(**sections), rules or SessionRules(hostname="gw.test"), "3f2a9c01")
    session.arrive(client_address(CLIENT))
    assert session.admission(None) is None
    return session


def greeted(rules: SessionRules | None = None, **sections) -> Session:
    """A session past the greeting with its reverse DNS known, EHLO done."""
    session = connected(rules, **sections)
    screening = session.policy.screen(client_address(CLIENT))
    assert session.connect_facts(screening, None) == LookUp(wait=False)
    assert session.rdns_known(CONFIRMED) is GREET
    session.hello("mail.example.org", esmtp=True)
    return session


def in_transaction(sender: str = "a@sender.example", **kwargs) -> Session:
    session = greeted(**kwargs)
    assert session.mail(sender, ["SIZE=1000"], False) == Say("250 2.1.0 Ok")
    return session


def accepted(session: Session, recipient: str = "bob@example.com") -> None:
    """One recipient through the policy and the backend."""
    ask = session.rcpt(recipient)
    assert isinstance(ask, Decide)
    relay = session.rcpt_decided(recipient, RcptDecision(PASS, CLIENT))
    assert isinstance(relay, RelayRcpt)
    if relay.mail_first:
        assert session.mail_relayed(OK) is None
    assert session.rcpt_relayed(recipient, OK) == Say("250 2.1.5 Ok")


# -- the transition table -------------------------------------------------------------
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


# -- the connect stage ----------------------------------------------------------------
def test_a_limit_refuses_before_the_greeting_and_counts_nothing() -> None:
    session = Session(policy(), SessionRules(hostname="gw.test"))
    session.arrive(client_address(CLIENT))
    say = session.admission(Limit.CLIENT_CONNECTIONS)
    assert say == Say(
        "421 4.7.0 gw.test Error: too many connections from your address, try again later",
        Then.CLOSE,
    )
    assert session.phase is Phase.DROPPED
    assert session.notes == [LimitReached(Limit.CLIENT_CONNECTIONS)]
    assert session.ended() is False  # never admitted: nothing to release


def test_an_admitted_client_is_released_exactly_once() -> None:
    session = connected()
    assert session.ended() is True
    assert session.ended() is False


def test_trusted_clients_are_exempt_from_the_per_client_limit() -> None:
    session = Session(policy(), SessionRules())
    assert session.arrive(client_address("127.0.0.1")) is True
    assert session.arrive(client_address(CLIENT)) is False


def test_deny_by_address_refuses_the_session() -> None:
    session = connected(lists={"deny_files": []})
    screening = session.policy.screen(client_address(CLIENT))
    verdict = Verdict(Action.REJECT, Reason.DENYLIST, Reply(554, "5.7.1", "Access denied"))
    say = session.connect_facts(screening, verdict)
    assert say == Say("554 5.7.1 Access denied", Then.REFUSE)
    assert session.phase is Phase.REFUSED
    assert session.notes == [Decided(verdict)]


def refused() -> Session:
    session = connected(lists={"deny_files": []})
    screening = session.policy.screen(client_address(CLIENT))
    verdict = Verdict(Action.REJECT, Reason.DENYLIST, Reply(554, "5.7.1", "Access denied"))
    assert session.connect_facts(screening, verdict).then is Then.REFUSE
    return session


def test_after_a_554_greeting_every_command_gets_503_until_the_door_closes() -> None:
    """RFC 5321 3.1: a 554 greeting, then 503 to everything but QUIT; a client that never
    says QUIT is shown the door after REFUSED_COMMANDS of them."""
    session = refused()
    said = [session.refused_command(b"EHLO bot.example\r\n") for _ in range(REFUSED_COMMANDS)]
    assert {say.reply for say in said} == {"503 5.5.1 Error: access denied, say QUIT"}
    assert [say.then for say in said] == [Then.GO_ON] * (REFUSED_COMMANDS - 1) + [Then.CLOSE]
    assert session.phase is Phase.REFUSED  # nothing was let in meanwhile


def test_after_a_554_greeting_quit_is_answered() -> None:
    session = refused()
    assert session.refused_command(b"MAIL FROM:<a@b.example>\r\n").then is Then.GO_ON
    assert session.refused_command(b"quit\r\n") == Say("221 2.0.0 Bye", Then.CLOSE)
    assert session.phase is Phase.CLOSED


def test_the_penalty_box_drops_before_the_greeting() -> None:
    session = connected()
    screening = session.policy.screen(client_address(CLIENT))
    say = session.connect_facts(screening, PENALTY)
    assert say == Say("421 4.7.0 Too many retries", Then.CLOSE)
    assert session.phase is Phase.DROPPED


def test_trusted_is_assessed_without_dns() -> None:
    session = Session(policy(), SessionRules())
    session.arrive(client_address("127.0.0.1"))
    session.admission(None)
    screening = session.policy.screen(client_address("127.0.0.1"))
    assert session.connect_facts(screening, screening.verdict) is GREET
    assert session.assessment is not None and session.assessment.verdict.reason is Reason.TRUSTED


def test_a_stranger_is_greeted_while_its_reverse_dns_is_looked_up() -> None:
    session = connected()
    screening = session.policy.screen(client_address(CLIENT))
    assert session.connect_facts(screening, None) == LookUp(wait=False)
    assert session.greet_before_rdns() is GREET
    assert session.assessment is None
    assert session.rdns_known(CONFIRMED) is None  # after the greeting: nothing to say
    assert session.assessment is not None and session.assessment.ptr == "mail.example.org"


def test_a_deny_entry_naming_ptrs_makes_the_greeting_wait(tmp_path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("dyn.example.net\n")
    session = connected(lists={"deny_files": [str(deny)]})
    screening = session.policy.screen(client_address(CLIENT))
    assert session.connect_facts(screening, None) == LookUp(wait=True)
    named = RDNS(RDNSStatus.CONFIRMED, ("p1.dyn.example.net",), ("p1.dyn.example.net",))
    say = session.rdns_known(named)
    assert isinstance(say, Say) and say.reply.startswith("554 5.7.1") and say.then is Then.REFUSE
    assert session.phase is Phase.REFUSED


def test_a_store_outage_at_connect_still_applies_the_address_lists() -> None:
    session = Session(policy(), SessionRules())
    session.arrive(client_address("127.0.0.1"))
    session.admission(None)
    assert session.store_down_at_connect(NOW) is GREET  # trusted
    stranger = connected()
    assert stranger.store_down_at_connect(NOW) == LookUp(wait=False)


# -- RCPT -----------------------------------------------------------------------------
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
    say = session.backend_failed(unavailable, "connection refused")
    assert say.reply.startswith("451 4.4.1")
    assert session.notes[-1] == BackendTrouble("connection refused")
    again = session.rcpt_decided("carol@example.com", RcptDecision(PASS, CLIENT))
    assert isinstance(again, Say) and again.reply.startswith("451 4.4.1")
    data = session.data()
    assert isinstance(data, Say) and data.reply.startswith("451 4.4.1")


@pytest.mark.parametrize(
    ("on_error", "passes"), [(OnError.TEMPFAIL, False), (OnError.PASS, True)], ids=str
)
def test_a_store_outage_at_rcpt_follows_on_error(on_error: OnError, passes: bool) -> None:
    session = in_transaction(rules=SessionRules(on_error=on_error))
    out = session.rcpt_decided("bob@example.com", StoreFault.DOWN)
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


# -- DATA -----------------------------------------------------------------------------
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
    assert session.data_decided(ask.recipient, StoreFault.DOWN) == Say(
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
    session = in_transaction(rules=SessionRules(bare_newline="normalize", add_received=False))
    accepted(session)
    session.data()
    out = session.message(b"a\n.\nb\x00\r\n", NOW)
    assert out == Deliver(b"a\r\n.\r\nb\r\n")
    assert session.notes[-2:] == [Repaired("nul"), Repaired("bare_newline")]


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
    assert (BackendTrouble(failure) in session.notes) is (failure is not None)
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


# -- limits and errors ----------------------------------------------------------------
def test_junk_commands_end_the_session_and_mail_restarts_the_count() -> None:
    session = greeted()
    assert session.idle_command(2) is None
    assert session.idle_command(2) is None
    session.mail("a@sender.example", [], False)
    assert session.idle_command(2) is None
    assert session.idle_command(2) is None
    say = session.idle_command(2)
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


# -- AUTH -----------------------------------------------------------------------------
MECHANISMS = ("PLAIN", "LOGIN")
AUTH_OK = BackendReply(235, "2.7.0 Authentication successful")
AUTH_REFUSED = BackendReply(535, "5.7.8 Error: authentication failed: authentication failure")


def encrypted(rules: SessionRules | None = None) -> Session:
    session = greeted(rules)
    session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    session.hello("laptop.example", esmtp=True)
    return session


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


@pytest.mark.parametrize(
    ("problem", "reply"), [("too_long", replies.LINE_TOO_LONG), ("too_big", replies.TOO_MUCH_DATA)]
)
def test_a_message_the_framer_gave_up_on_is_refused(problem: str, reply: str) -> None:
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


def test_starttls_forgets_an_authentication() -> None:
    session = encrypted()
    session.auth_answered("PLAIN", AUTH_OK)
    session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")  # RFC 3207: start over
    assert session.authenticated is None


# -- the tarpit ---------------------------------------------------------------------------
SUSPECTED = RDNS(
    RDNSStatus.CONFIRMED, ("p1234-ip45.dyn.example.jp",), ("p1234-ip45.dyn.example.jp",)
)


def suspect_in_transaction(action: str) -> Session:
    rules = SessionRules(hostname="gw.test", suspect_action=action, tarpit_delay=30)
    session = connected(rules)
    screening = session.policy.screen(client_address(CLIENT))
    session.connect_facts(screening, None)
    session.rdns_known(SUSPECTED)
    session.hello("pc", esmtp=True)
    session.mail("a@sender.example", [], False)
    return session


def deferred(key: str = CLIENT) -> RcptDecision:
    return RcptDecision(DEFER, key)


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
    clean.rules = SessionRules(hostname="gw.test", suspect_action="tarpit")
    assert isinstance(clean.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT)), RelayRcpt)
    stranger = in_transaction(policy={"defer": "all", "trusted_networks": []})
    stranger.rules = SessionRules(hostname="gw.test", suspect_action="tarpit")
    ichigen = Verdict(Action.DEFER, Reason.ICHIGEN, Reply(450, "4.7.1", "Try again later"))
    out = stranger.rcpt_decided("bob@example.com", RcptDecision(ichigen, CLIENT))
    assert out == Say("450 4.7.1 Try again later")  # a clean stranger is no suspect


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


def test_a_familiar_client_is_not_looked_up_in_the_dns_lists() -> None:
    stranger, known = connected(), connected()
    screening = stranger.policy.screen(client_address(CLIENT))
    stranger.connect_facts(screening, None)
    known.connect_facts(screening, None, familiar=True)
    assert stranger.asks_lists(True) and not stranger.asks_lists(False)
    assert not known.asks_lists(True)
