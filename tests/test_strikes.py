"""Strikes counted per address key, and the penalty box they lead to (policy/strikes.py
and the decider), on the memory store with an injected clock."""

from __future__ import annotations

import pytest

from gateway.assembly import build_policy
from gateway.decider import Decider, StrikeCount
from gateway.policy import strikes
from gateway.policy.net import client_address
from gateway.policy.records import Penalty, Space, Strikes, store_key
from gateway.policy.vocabulary import Action, Reason
from gateway.store.memory import MemoryStore
from tests.conftest import FakeClock, make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

LIMIT = strikes.StrikeLimit(limit=3, window=600, penalty_ttl=900)


def test_strikes_are_counted_within_the_window_from_the_first() -> None:
    first = strikes.struck(None, 100.0, LIMIT, Reason.AUTH_FAILURES, "192.0.2.9")
    assert first.record == Strikes(100.0, 1, 700.0) and first.penalty is None
    second = strikes.struck(first.record, 650.0, LIMIT, Reason.AUTH_FAILURES, "192.0.2.9")
    assert second.record == Strikes(100.0, 2, 700.0)
    # After the window the count starts over: a typo a day is no attack.
    later = strikes.struck(second.record, 700.0, LIMIT, Reason.AUTH_FAILURES, "192.0.2.9")
    assert later.record == Strikes(700.0, 1, 1300.0) and later.penalty is None


@pytest.mark.parametrize("reason", strikes.REASONS, ids=str)
def test_the_limit_puts_the_address_in_the_penalty_box_with_its_reason(reason) -> None:
    record = None
    for now in (1.0, 2.0, 3.0):
        counted = strikes.struck(record, now, LIMIT, reason, "192.0.2.9")
        record = counted.record
    assert counted.penalty == Penalty(3.0, 903.0, 3, "192.0.2.9", reason=reason.value)
    off = strikes.StrikeLimit(0)
    assert strikes.struck(Strikes(1.0, 99, 3601.0), 2.0, off, reason, "x").penalty is None


def test_each_reason_has_its_own_settings() -> None:
    settings = make_settings(
        {
            "auth": {"max_failures": 4, "failure_window": 60, "penalty_ttl": 120},
            "autoban": {"relay_limit": 2, "probe_limit": 0, "loiter_limit": 9, "window": 30},
        }
    )
    rules = build_policy(settings).strike_rules
    assert rules.of(Reason.AUTH_FAILURES) == strikes.StrikeLimit(4, 60, 120)
    assert rules.of(Reason.AUTOBAN_RELAY) == strikes.StrikeLimit(2, 30, 3600)
    assert rules.of(Reason.AUTOBAN_PROBE).limit == 0
    assert rules.of(Reason.AUTOBAN_LOITER).limit == 9


def decider_for(clock: FakeClock, **sections) -> Decider:
    settings = make_settings({"auth": {"max_failures": 2, "penalty_ttl": 60}, **sections})
    built = build_policy(settings)
    return Decider(lambda: built, MemoryStore(clock=clock), None, clock=clock)


async def test_the_penalty_is_met_at_the_next_connection_with_its_own_words(clock) -> None:
    decider = decider_for(clock, policy={"trusted_networks": []})
    screening = decider.policy.screen(client_address("198.51.100.7"))
    assert (await decider.struck(screening, Reason.AUTH_FAILURES)).verdict is None
    struck = await decider.struck(screening, Reason.AUTH_FAILURES)
    verdict = struck.verdict
    assert struck.count == 2 and verdict is not None and verdict.action is Action.PENALTY
    assert verdict.reason is Reason.AUTH_FAILURES
    assert str(verdict.reply).startswith("421 4.7.0 Too many failed authentications")
    connect = await decider.at_connect(client_address("198.51.100.7"))
    assert connect.verdict == verdict
    clock.advance(61)
    assert (await decider.at_connect(client_address("198.51.100.7"))).verdict is None


async def test_reasons_are_counted_apart_and_an_unset_limit_costs_nothing(clock) -> None:
    decider = decider_for(clock, autoban={"relay_limit": 3, "probe_limit": 0})
    screening = decider.policy.screen(client_address("198.51.100.7"))
    await decider.struck(screening, Reason.AUTH_FAILURES)
    assert (await decider.struck(screening, Reason.AUTOBAN_RELAY)).count == 1
    off = await decider.struck(screening, Reason.AUTOBAN_PROBE)
    assert off.count == 0 and off.verdict is None
    stored = await decider.store.get(store_key(Space.STRIKES, "198.51.100.7/autoban_probe"))
    assert stored is None


async def test_trusted_networks_are_never_counted_nor_boxed(clock) -> None:
    """Not even a penalty record: export-blocklist would hand it to the firewall."""
    decider = decider_for(clock, policy={"trusted_networks": ["198.51.100.0/24"]})
    screening = decider.policy.screen(client_address("198.51.100.7"))
    for _ in range(3):
        assert await decider.struck(screening, Reason.AUTH_FAILURES) == StrikeCount(0, None)
    assert await decider.store.get(store_key(Space.PENALTY, "198.51.100.7")) is None
    assert await decider.store.get(store_key(Space.STRIKES, "198.51.100.7/auth_failures")) is None
