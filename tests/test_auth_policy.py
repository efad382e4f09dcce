"""Failed authentications counted, and the penalty box they lead to (policy/auth.py and
the decider), on the memory store with an injected clock."""

from __future__ import annotations

from gateway.assembly import build_policy
from gateway.decider import Decider
from gateway.policy import auth
from gateway.policy.net import client_address
from gateway.policy.records import AuthFailures, Penalty, Space, store_key
from gateway.policy.vocabulary import Action, Reason
from gateway.store.memory import MemoryStore
from tests.conftest import FakeClock, make_settings

RULES = auth.Rules(max_failures=3, failure_window=600, penalty_ttl=900)


def test_failures_are_counted_within_the_window_from_the_first() -> None:
    first = auth.failed(None, 100.0, RULES, "192.0.2.9")
    assert first.record == AuthFailures(100.0, 1, 700.0) and first.penalty is None
    second = auth.failed(first.record, 650.0, RULES, "192.0.2.9")
    assert second.record == AuthFailures(100.0, 2, 700.0)
    # After the window the count starts over: a typo a day is no attack.
    later = auth.failed(second.record, 700.0, RULES, "192.0.2.9")
    assert later.record == AuthFailures(700.0, 1, 1300.0) and later.penalty is None


def test_the_limit_puts_the_address_in_the_penalty_box() -> None:
    record = None
    for now in (1.0, 2.0, 3.0):
        counted = auth.failed(record, now, RULES, "192.0.2.9")
        record = counted.record
    assert counted.penalty == Penalty(3.0, 903.0, 3, "192.0.2.9", reason="auth_failures")
    never = auth.Rules(max_failures=0)
    assert auth.failed(AuthFailures(1.0, 99, 3601.0), 2.0, never, "x").penalty is None


def decider_for(clock: FakeClock, **policy) -> Decider:
    settings = make_settings({"auth": {"max_failures": 2, "penalty_ttl": 60}, **policy})
    built = build_policy(settings)
    return Decider(lambda: built, MemoryStore(clock=clock), None, clock=clock)


async def test_the_penalty_is_met_at_the_next_connection_with_its_own_words(clock) -> None:
    decider = decider_for(clock, policy={"trusted_networks": []})
    screening = decider.policy.screen(client_address("198.51.100.7"))
    assert await decider.auth_failed(screening) is None
    verdict = await decider.auth_failed(screening)
    assert verdict is not None and verdict.action is Action.PENALTY
    assert verdict.reason is Reason.AUTH_FAILURES
    assert str(verdict.reply).startswith("421 4.7.0 Too many failed authentications")
    connect = await decider.at_connect(client_address("198.51.100.7"))
    assert connect.verdict == verdict
    clock.advance(61)
    assert (await decider.at_connect(client_address("198.51.100.7"))).verdict is None


async def test_trusted_networks_are_never_penalised(clock) -> None:
    decider = decider_for(clock, policy={"trusted_networks": ["198.51.100.0/24"]})
    screening = decider.policy.screen(client_address("198.51.100.7"))
    for _ in range(3):
        assert await decider.auth_failed(screening) is None
    stored = await decider.store.get(store_key(Space.AUTH, "198.51.100.7"))
    assert isinstance(stored, AuthFailures) and stored.failures == 3
