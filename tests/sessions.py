"""Sessions of the session core at a given point (connected, greeted, in a transaction,
encrypted, a suspect's), and the facts the tests of tests/test_core_*.py feed them.

Those tests mirror smtp/core/, one file per stage, without a socket (h11's test_state
style): facts go in as values, what the session says and asks for comes out. The
adapter's wiring is tests/test_smtp_server.py.
"""

from __future__ import annotations

from gateway.assembly import build_policy
from gateway.policy.decision import RcptDecision, Verdict
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.replies import Reply
from gateway.policy.vocabulary import Action, Reason, SuspectAction
from gateway.relay.reply import BackendReply
from gateway.smtp.session import GREET, Decide, LookUp, RelayRcpt, Say, Session, SessionRules, Then
from tests.conftest import make_settings

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


def refused() -> Session:
    session = connected(lists={"deny_files": []})
    screening = session.policy.screen(client_address(CLIENT))
    verdict = Verdict(Action.REJECT, Reason.DENYLIST, Reply(554, "5.7.1", "Access denied"))
    assert session.connect_facts(screening, verdict).then is Then.REFUSE
    return session


MECHANISMS = ("PLAIN", "LOGIN")


AUTH_OK = BackendReply(235, "2.7.0 Authentication successful")


AUTH_REFUSED = BackendReply(535, "5.7.8 Error: authentication failed: authentication failure")


def encrypted(rules: SessionRules | None = None) -> Session:
    session = greeted(rules)
    session.tls_started("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    session.hello("laptop.example", esmtp=True)
    return session


SUSPECTED = RDNS(
    RDNSStatus.CONFIRMED, ("p1234-ip45.dyn.example.jp",), ("p1234-ip45.dyn.example.jp",)
)


def suspect_in_transaction(action: str) -> Session:
    rules = SessionRules(hostname="gw.test", suspect_action=SuspectAction(action), tarpit_delay=30)
    session = connected(rules)
    screening = session.policy.screen(client_address(CLIENT))
    session.connect_facts(screening, None)
    session.rdns_known(SUSPECTED)
    session.hello("pc", esmtp=True)
    session.mail("a@sender.example", [], False)
    return session


def deferred(key: str = CLIENT) -> RcptDecision:
    return RcptDecision(DEFER, key)
