"""The connect stage and the pregreet test (smtp/core/connect.py), without a socket."""

from __future__ import annotations

import pytest

from gateway.policy.decision import Verdict
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import Action, Limit, Reason
from gateway.smtp.core.notes import Decided, LimitReached
from gateway.smtp.session import (
    GREET,
    REFUSED_COMMANDS,
    LookUp,
    Phase,
    Say,
    Session,
    SessionRules,
    Then,
)
from tests.sessions import CLIENT, CONFIRMED, NOW, PENALTY, connected, policy, refused

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


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


def test_a_familiar_client_is_not_looked_up_in_the_dns_lists() -> None:
    stranger, known = connected(), connected()
    screening = stranger.policy.screen(client_address(CLIENT))
    stranger.connect_facts(screening, None)
    known.connect_facts(screening, None, familiar=True)
    assert stranger.asks_lists(True) and not stranger.asks_lists(False)
    assert not known.asks_lists(True)
