"""The order of the steps before the greeting (smtp/steps.py's `connect`), without a
socket: a scripted `ConnectEffects` records what the steps asked for, in order.

RCPT's and DATA's steps are driven here through the simulator (tests/test_simulate.py)
and through real sockets (tests/test_smtp_server.py); the connect stage has branches
(a store outage, a session timed out during an await, a deny entry naming PTRs) that
neither reaches on demand, so they are pinned here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.decider import Connect, DnsFacts
from gateway.policy.facts import RDNS
from gateway.policy.net import IPAddress, client_address
from gateway.policy.vocabulary import Limit, PregreetAction
from gateway.smtp import steps
from gateway.smtp.session import Phase, Say, Session, SessionRules, Then
from tests.sessions import CLIENT, CONFIRMED, NOW, policy

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


@dataclass
class Script:
    """ConnectEffects that answer from fixed facts and write down every call."""

    core: Session
    limit: Limit | None = None
    store_down: bool = False
    cached: RDNS | None = None  # reverse DNS at hand (a returning host)
    rdns: RDNS = CONFIRMED  # what a lookup finds
    talks_early: bool = False
    time_out_at: str = ""  # the call during which the session times out
    calls: list[str] = field(default_factory=list)
    later: Coroutine[Any, Any, None] | None = None  # the lookups put on the side

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.time_out_at:
            self.core.timed_out()

    def admit(self, address: IPAddress, exempt: bool) -> Limit | None:
        self._call("admit")
        return self.limit

    async def at_connect(self) -> Connect | None:
        self._call("at_connect")
        if self.store_down:
            return None
        return Connect(self.core.policy.screen(client_address(CLIENT)), None)

    def now(self) -> float:
        self._call("now")
        return NOW

    def cached_facts(self, lists: bool) -> DnsFacts | None:
        self._call("cached_facts")
        return None if self.cached is None else DnsFacts(self.cached, None)

    async def dns_facts(self, lists: bool) -> DnsFacts:
        self._call("dns_facts")
        return DnsFacts(self.rdns, None)

    def assess_later(self, lookups: Coroutine[Any, Any, None]) -> None:
        self._call("assess_later")
        self.later = lookups

    async def read_ahead(self) -> None:
        self._call("read_ahead")

    def noted(self) -> None:
        self._call("noted")
        self.core.notes.clear()

    async def teaser_then_wait(self, seconds: float) -> bool | None:
        self._call(f"teaser_then_wait {seconds:g}")
        return self.talks_early

    async def pregreeted(self) -> None:
        self._call("pregreeted")


def connect(script: Script) -> Say | bool:
    return asyncio.run(steps.connect(script.core, client_address(CLIENT), False, script))


def run(script: Script) -> Say | bool:
    """The connect steps; the lookups they put on the side (a new host's) are not run."""
    said = connect(script)
    if script.later is not None:
        script.later.close()
    return said


def session(rules: SessionRules | None = None, **sections) -> Session:
    return Session(policy(**sections), rules or SessionRules(hostname="gw.test"), "5e551011")


def test_a_new_host_is_greeted_while_its_lookups_go_on() -> None:
    script = Script(session())
    assert connect(script) is True
    assert script.calls == ["admit", "at_connect", "cached_facts", "assess_later"]
    assert script.core.phase is Phase.GREETED and script.core.assessment is None
    assert script.later is not None
    asyncio.run(script.later)  # the lookups, on the side: DNS, then the read ahead
    assert script.calls[-2:] == ["dns_facts", "read_ahead"]
    assert script.core.assessment is not None and script.core.phase is Phase.GREETED


def test_a_returning_host_uses_what_dns_said_and_reads_ahead() -> None:
    script = Script(session(), cached=CONFIRMED)
    assert run(script) is True
    assert script.calls == ["admit", "at_connect", "cached_facts", "read_ahead"]
    assert script.core.assessment is not None


def test_a_deny_entry_naming_ptrs_waits_for_reverse_dns_first(tmp_path) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("mail.example.org\n")
    script = Script(session(lists={"deny_files": [str(deny)]}))
    say = run(script)
    assert isinstance(say, Say) and say.reply.startswith("554 ") and say.then is Then.REFUSE
    assert script.calls == ["admit", "at_connect", "cached_facts", "dns_facts", "noted"]


def test_a_limit_ends_the_session_before_the_store_is_asked() -> None:
    script = Script(session(), limit=Limit.CLIENT_CONNECTIONS)
    say = run(script)
    assert isinstance(say, Say) and say.reply.startswith("421 ") and say.then is Then.CLOSE
    assert script.calls == ["admit", "noted"]


def test_a_store_outage_at_connect_still_greets_by_the_clock() -> None:
    script = Script(session(), store_down=True)
    assert run(script) is True
    assert script.calls == ["admit", "at_connect", "now", "cached_facts", "assess_later"]


@pytest.mark.parametrize("during", ["at_connect", "dns_facts"])
def test_a_session_that_timed_out_during_an_await_goes_no_further(tmp_path, during) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("dyn.example.net\n")  # names a PTR: the lookup is waited for
    script = Script(session(lists={"deny_files": [str(deny)]}), time_out_at=during)
    assert run(script) is False
    assert script.calls[-1] == during


def pregreet_rules(action: PregreetAction) -> SessionRules:
    return SessionRules(hostname="gw.test", greet_wait=3.0, pregreet_action=action)


def test_the_pregreet_wait_comes_last_and_a_quiet_client_is_greeted() -> None:
    script = Script(session(pregreet_rules(PregreetAction.DROP)))
    assert run(script) is True
    assert script.calls[-2:] == ["assess_later", "teaser_then_wait 3"]


def test_a_client_that_talks_early_is_remembered_then_dropped() -> None:
    script = Script(session(pregreet_rules(PregreetAction.DROP)), talks_early=True)
    say = run(script)
    assert isinstance(say, Say) and say.reply.startswith("521 ") and say.then is Then.CLOSE
    assert script.calls[-3:] == ["teaser_then_wait 3", "pregreeted", "noted"]


def test_a_client_gone_during_the_wait_is_not_remembered() -> None:
    script = Script(session(pregreet_rules(PregreetAction.DROP)), time_out_at="teaser_then_wait 3")
    assert run(script) is False
    assert "pregreeted" not in script.calls
