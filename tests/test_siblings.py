"""Retries from another host of a pool (policy/siblings.py): the pure rule, then through
the Decider on the memory store with an injected clock."""

from __future__ import annotations

from gateway.assembly import build_policy
from gateway.decider import Decider
from gateway.policy import siblings
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.records import Familiar, Sibling, Space, store_key
from gateway.policy.vocabulary import Action, Reason
from gateway.store.memory import MemoryStore
from tests.conftest import FakeClock, make_settings


def test_a_message_from_a_sibling_after_the_delay_is_a_retry() -> None:
    first = siblings.seen(None, 100.0, 300, 86400, "192.0.2.1")
    assert not first.promote and first.changed
    assert first.record == Sibling(100.0, "192.0.2.1", 86500.0)
    too_soon = siblings.seen(first.record, 399.0, 300, 86400, "192.0.2.2")
    assert not too_soon.promote and not too_soon.changed
    same_host = siblings.seen(first.record, 500.0, 300, 86400, "192.0.2.1")
    assert not same_host.promote  # its own retry is the deferral record's business
    sibling = siblings.seen(first.record, 400.0, 300, 86400, "198.51.100.7")
    assert sibling.promote and sibling.first_by == "192.0.2.1"
    expired = siblings.seen(first.record, 86500.0, 300, 86400, "198.51.100.7")
    assert not expired.promote and expired.record.first == 86500.0


POOL = "outbound.pool.example"


def pool_host(address: str) -> RDNS:
    """An S25R-looking, forward-confirmed name in one provider's domain."""
    name = f"mail-{address.replace('.', '-')}.{POOL}"
    return RDNS(RDNSStatus.CONFIRMED, (name,), (name,))


def decider_for(clock: FakeClock, **policy) -> Decider:
    settings = make_settings({"policy": {"trusted_networks": [], **policy}})
    built = build_policy(settings)
    return Decider(lambda: built, MemoryStore(clock=clock), None, clock=clock)


async def decide(decider: Decider, address: str, sender: str = "news@provider.example"):
    screening = decider.policy.screen(client_address(address))
    assessment = await decider.assess(screening, pool_host(address))
    assert assessment.defer_reason is not None and assessment.s25r.suspect
    return await decider.at_rcpt(assessment, sender, "bob@example.com", size=2048)


async def test_a_pool_retrying_from_another_address_is_promoted(clock) -> None:
    decider = decider_for(clock)
    assert (await decide(decider, "192.0.2.1")).verdict.action is Action.DEFER
    clock.advance(301)  # the pool's retry, from another host (another /24 even)
    retry = await decide(decider, "198.51.100.7")
    assert retry.verdict.action is Action.PASS and retry.verdict.reason is Reason.PROMOTED
    assert "192.0.2.1 brought first (outbound.pool.example)" in retry.verdict.detail
    record = await decider.store.get(store_key(Space.DEFER, "198.51.100.7"))
    assert isinstance(record, Familiar)  # and that host passes from now on
    clock.advance(10)
    assert (await decide(decider, "198.51.100.7")).verdict.reason is Reason.FAMILIAR


async def test_another_message_from_a_sibling_is_no_retry(clock) -> None:
    decider = decider_for(clock)
    await decide(decider, "192.0.2.1")
    clock.advance(301)
    other = await decide(decider, "198.51.100.7", sender="someone.else@provider.example")
    assert other.verdict.action is Action.DEFER


async def test_before_the_delay_a_sibling_is_deferred_too(clock) -> None:
    decider = decider_for(clock)
    await decide(decider, "192.0.2.1")
    clock.advance(60)  # a pool falling back to another host at once: no retry yet
    assert (await decide(decider, "198.51.100.7")).verdict.action is Action.DEFER


async def test_off_by_setting(clock) -> None:
    decider = decider_for(clock, sibling_retries=False)
    await decide(decider, "192.0.2.1")
    clock.advance(301)
    assert (await decide(decider, "198.51.100.7")).verdict.action is Action.DEFER
    assert await decider.store.get(store_key(Space.SIBLING, f"{POOL}/x")) is None


async def test_explain_says_a_sibling_retry_would_pass_and_writes_nothing(clock) -> None:
    decider = decider_for(clock)
    await decide(decider, "192.0.2.1")
    clock.advance(301)
    screening = decider.policy.screen(client_address("198.51.100.7"))
    assessment = await decider.assess(screening, pool_host("198.51.100.7"))
    dry = await decider.at_rcpt(
        assessment, "news@provider.example", "bob@example.com", size=2048, dry_run=True
    )
    assert dry.verdict.reason is Reason.PROMOTED and "brought first" in dry.verdict.detail
    assert await decider.store.get(store_key(Space.DEFER, "198.51.100.7")) is None
