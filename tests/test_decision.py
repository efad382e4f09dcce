"""The decision order (README "How it decides") through the Decider, with facts given directly."""

from __future__ import annotations

import pytest

from gateway.assembly import build_policy, dynamic_list
from gateway.decider import Decider
from gateway.policy.decision import decided_at_data
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.lists import Role
from gateway.policy.net import client_address
from gateway.policy.records import Familiar, Penalty
from gateway.policy.vocabulary import Action, Reason, Retry
from gateway.store.memory import MemoryStore
from tests.conftest import make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def confirmed(name: str) -> RDNS:
    return RDNS(RDNSStatus.CONFIRMED, (name,), (name,))


NO_PTR = RDNS(RDNSStatus.UNCONFIRMED, detail="NXDOMAIN")
TEMPFAIL = RDNS(RDNSStatus.TEMPFAIL, detail="SERVFAIL")


@pytest.fixture
def make(clock):
    def build(overrides=None, deny_dynamic=(), allow_dynamic=()):
        settings = make_settings(overrides)
        policy = build_policy(settings).with_dynamic(
            dynamic_list([(e, "") for e in allow_dynamic], Role.ALLOW),
            dynamic_list([(e, "") for e in deny_dynamic], Role.DENY),
        )
        return Decider(lambda: policy, MemoryStore(clock=clock), None, clock=clock)

    return build


async def session(
    decider: Decider, ip: str, rdns: RDNS, rcpt="bob@example.com", sender="a@b.example"
):
    """connect -> assess -> RCPT, as an SMTP session would; returns the last verdict."""
    connect = await decider.at_connect(client_address(ip))
    if connect.verdict is not None and connect.verdict.action is not Action.PASS:
        return connect.verdict
    assessment = await decider.assess(connect.screening, rdns)
    return (await decider.at_rcpt(assessment, sender, rcpt)).verdict


async def test_trusted_passes_before_everything(make) -> None:
    decider = make(deny_dynamic=["127.0.0.1"])
    verdict = await session(decider, "127.0.0.1", NO_PTR)
    assert (verdict.action, verdict.reason) == (Action.PASS, Reason.TRUSTED)


async def test_deny_by_address_at_connect_and_by_name_after_dns(make) -> None:
    decider = make(deny_dynamic=["192.0.2.66", "spam.example"])
    connect = await decider.at_connect(client_address("192.0.2.66"))
    assert connect.verdict.action is Action.REJECT and connect.verdict.reason is Reason.DENYLIST
    assert str(connect.verdict.reply) == "554 5.7.1 Access denied"
    # a deny name matches even an unconfirmed PTR
    verdict = await session(
        decider, "192.0.2.67", RDNS(RDNSStatus.UNCONFIRMED, ("mx.spam.example",))
    )
    assert verdict.reason is Reason.DENYLIST


async def test_penalty_box_comes_before_allow(make, clock) -> None:
    decider = make(allow_dynamic=["192.0.2.9"])
    await decider.store.put("penalty:192.0.2.9", Penalty(clock.now, clock.now + 600, 6))
    connect = await decider.at_connect(client_address("192.0.2.9"))
    assert connect.verdict.action is Action.PENALTY and connect.verdict.reply.code == 421
    assert "come back in 10m00s" in connect.verdict.reply.text
    clock.advance(600)
    connect = await decider.at_connect(client_address("192.0.2.9"))
    assert connect.verdict.reason is Reason.ALLOWLIST


async def test_allow_names_count_only_when_confirmed(make) -> None:
    decider = make()
    assert (
        await session(decider, "192.0.2.9", confirmed("mail-ot1-f41.google.com"))
    ).reason is Reason.ALLOWLIST
    spoofed = RDNS(RDNSStatus.UNCONFIRMED, ("mail-ot1-f41.google.com",))
    assert (await session(decider, "192.0.2.10", spoofed)).reason is Reason.S25R_RULE0


async def test_suspect_is_deferred_retried_early_promoted_then_familiar(make, clock) -> None:
    decider = make()
    ptr = confirmed("p1234-ip45.dyn.example.jp")
    first = await session(decider, "203.0.113.9", ptr)
    assert (first.action, first.reason, first.reply.code) == (Action.DEFER, Reason.S25R_RULE1, 450)
    clock.advance(60)
    early = await session(decider, "203.0.113.9", ptr)
    # A retry a minute later: before the delay, but patient enough not to be counted.
    assert early.reason is Reason.S25R_RULE1 and "retried before the delay" in early.reply.text
    assert "retry in 4m00s" in early.reply.text
    clock.advance(240)
    promoted = await session(decider, "203.0.113.9", ptr)
    assert (promoted.action, promoted.reason) == (Action.PASS, Reason.PROMOTED)
    clock.advance(86400 * 10)
    assert (await session(decider, "203.0.113.9", ptr)).reason is Reason.FAMILIAR


async def test_clean_host_passes_at_once_in_suspect_mode(make) -> None:
    decider = make()
    verdict = await session(decider, "192.0.2.25", confirmed("mail.example.org"))
    assert (verdict.action, verdict.reason) == (Action.PASS, Reason.CLEAN)
    assert await decider.store.scan() == []  # nothing recorded for clean hosts


async def test_onajimi_mode_defers_every_ichigen_san_and_lumps_by_domain(make, clock) -> None:
    decider = make({"policy": {"defer": "all"}})
    first = await session(decider, "192.0.2.25", confirmed("mx1.example.org"))
    assert first.reason is Reason.ICHIGEN
    clock.advance(301)
    # A different server of the same domain retries: the domain becomes familiar.
    assert (
        await session(decider, "192.0.2.26", confirmed("mx2.example.org"))
    ).reason is Reason.PROMOTED
    assert (
        await session(decider, "192.0.2.27", confirmed("mx3.example.org"))
    ).reason is Reason.FAMILIAR


async def test_triplet_mode_and_auto_familiar(make, clock) -> None:
    decider = make({"policy": {"defer": "all", "key": "triplet", "auto_familiar_after": 2}})
    ptr = confirmed("mail.example.org")

    async def send(sender: str, rcpt: str):
        return await session(decider, "192.0.2.25", ptr, rcpt=rcpt, sender=sender)

    assert (await send("a@x.example", "bob@example.com")).reason is Reason.GREYLIST
    assert (
        await send("a@x.example", "eve@example.com")
    ).reason is Reason.GREYLIST  # another triplet
    clock.advance(301)
    assert (
        await send("a+tag@X.example", "Bob@example.com")
    ).reason is Reason.PROMOTED  # normalized
    assert (await send("c@y.example", "zed@example.com")).reason is Reason.GREYLIST
    assert (await send("a@x.example", "eve@example.com")).reason is Reason.PROMOTED  # second pass
    # two triplets passed: the whole client is familiar, any triplet passes
    verdict = await send("new@z.example", "new@example.com")
    assert verdict.reason is Reason.FAMILIAR


async def test_dns_tempfail_defers_unless_familiar_under_the_address(make, clock) -> None:
    decider = make()
    verdict = await session(decider, "192.0.2.40", TEMPFAIL)
    assert (verdict.action, verdict.reason) == (Action.DEFER, Reason.DNS_TEMPFAIL)
    assert str(verdict.reply).startswith("451 4.4.3 ")
    assert await decider.store.scan() == []  # nothing recorded, nothing counted as early
    await decider.store.put("defer:192.0.2.40", Familiar(clock.now, clock.now, clock.now + 100))
    assert (await session(decider, "192.0.2.40", TEMPFAIL)).reason is Reason.FAMILIAR


async def test_relay_check_comes_before_deferral(make) -> None:
    decider = make()
    verdict = await session(decider, "203.0.113.9", NO_PTR, rcpt="victim@elsewhere.example")
    assert (verdict.action, verdict.reason) == (Action.REJECT, Reason.RELAY_DENIED)
    assert str(verdict.reply) == "554 5.7.1 Relay access denied"
    assert await decider.store.scan() == []  # a relay probe leaves no deferral record


async def test_null_sender_deferral_moves_to_data(make) -> None:
    decider = make()
    verdict = await session(decider, "203.0.113.9", NO_PTR, sender="")
    assert decided_at_data("", verdict) and not decided_at_data("a@b.example", verdict)
    assert str(verdict.at_data().reply).startswith("451 4.7.1 ")


async def test_impatient_host_lands_in_penalty_box(make, clock) -> None:
    decider = make({"policy": {"impatient_retries": 3}})
    outcomes = []
    for _ in range(4):  # the same message, again every six seconds
        outcomes.append(await session(decider, "203.0.113.50", NO_PTR))
        clock.advance(6)
    assert [v.reason for v in outcomes] == [
        Reason.S25R_RULE0,
        Reason.EARLY_RETRY,
        Reason.EARLY_RETRY,
        Reason.IMPATIENT,
    ]
    assert outcomes[-1].action is Action.PENALTY
    connect = await decider.at_connect(client_address("203.0.113.50"))
    assert connect.verdict.action is Action.PENALTY


async def test_dry_run_reads_but_never_writes(make) -> None:
    decider = make()
    connect = await decider.at_connect(client_address("203.0.113.9"))
    assessment = await decider.assess(connect.screening, NO_PTR)
    for _ in range(3):
        decision = await decider.at_rcpt(assessment, "a@b.example", "bob@example.com", dry_run=True)
        assert decision.verdict.reason is Reason.S25R_RULE0 and decision.record_kind == "none"
    assert await decider.store.scan() == []


async def test_delivery_refreshes_familiar_record(make, clock) -> None:
    decider = make()
    await decider.store.put("defer:example.org", Familiar(clock.now, clock.now, clock.now + 100))
    clock.advance(50)
    await decider.delivered({"example.org"})
    assert (await decider.store.get("defer:example.org")).last_seen == clock.now


async def test_retry_outcome_is_reported_for_metrics(make, clock) -> None:
    decider = make()
    connect = await decider.at_connect(client_address("203.0.113.9"))
    assessment = await decider.assess(connect.screening, NO_PTR)
    await decider.at_rcpt(assessment, "a@b.example", "bob@example.com")
    clock.advance(86400 * 1.5)
    decision = await decider.at_rcpt(assessment, "a@b.example", "bob@example.com")
    assert decision.step.retry is Retry.EXPIRED and decision.verdict.action is Action.DEFER


async def test_name_judgements_are_remembered_but_never_across_policies(make) -> None:
    decider = make()
    policy = decider.policy
    ptr = confirmed("mx.partner.example")
    screening = policy.screen(client_address("192.0.2.30"))
    assert policy.assess(screening, ptr).verdict.reason is Reason.CLEAN
    assert len(policy.name_memo) == 1
    assert policy.assess(screening, ptr).verdict.reason is Reason.CLEAN  # from the memo
    # A dynamic allow/deny change builds a new policy with an empty memo.
    denied = policy.with_dynamic(
        policy.dynamic_allow, dynamic_list([("partner.example", "")], Role.DENY)
    )
    assert denied.name_memo == {}
    assert denied.assess(screening, ptr).verdict.reason is Reason.DENYLIST
    assert policy.assess(screening, ptr).verdict.reason is Reason.CLEAN


async def test_address_blacklist_outranks_a_remembered_clean_name(make) -> None:
    decider = make()
    policy = decider.policy
    ptr = confirmed("mail.example.org")
    clean = policy.screen(client_address("192.0.2.31"))
    assert policy.assess(clean, ptr).verdict.reason is Reason.CLEAN
    from gateway.policy.lists import ClientList, parse_entry
    from gateway.policy.s25r import S25RClassifier

    listed = ClientList(Role.BLACKLIST, [parse_entry("192.0.2.32", Role.BLACKLIST, "bl:1")])
    from dataclasses import replace

    with_bl = replace(policy, classifier=S25RClassifier(blacklist=listed), name_memo={})
    with_bl.assess(with_bl.screen(client_address("192.0.2.31")), ptr)  # memoise the clean name
    judged = with_bl.assess(with_bl.screen(client_address("192.0.2.32")), ptr)
    assert judged.verdict is None and judged.defer_reason is Reason.S25R_BLACKLIST


class ReadAheadStore(MemoryStore):
    """A store whose updates want the record read ahead (as Redis's do); counts reads."""

    prefetch_saves_trips = True

    def __init__(self, clock) -> None:
        super().__init__(clock=clock)
        self.reads: list[str] = []

    async def read(self, key: str):
        self.reads.append(key)
        return await super().read(key)


@pytest.mark.parametrize("reads_ahead", [True, False])
async def test_prefetch_reads_a_lumped_key_only_where_it_saves_a_trip(clock, reads_ahead) -> None:
    policy = build_policy(make_settings({"policy": {"defer": "all"}}))
    store = ReadAheadStore(clock) if reads_ahead else MemoryStore(clock=clock)
    decider = Decider(lambda: policy, store, None, clock=clock)
    await store.put("defer:example.org", Familiar(clock.now, clock.now, clock.now + 100))
    connect = await decider.at_connect(client_address("192.0.2.25"))
    assessment = await decider.assess(connect.screening, confirmed("mx1.example.org"))
    assert assessment.client_key == "example.org"  # lumped: not the key read at connect
    snapshot, key = decider.prefetch_plan(assessment, known=connect.snapshot)
    if key is not None:  # as the SMTP adapter does it, in a task overlapping EHLO and MAIL
        snapshot = await store.read(key)
    if reads_ahead:
        # After the connect stage's two reads (penalty, address key): the lumped key.
        assert store.reads[2:] == ["defer:example.org"]
        assert isinstance(snapshot.record, Familiar)
    else:
        assert snapshot is None  # the RCPT update reads it under its own lock anyway
    decision = await decider.at_rcpt(
        assessment, "a@b.example", "bob@example.com", snapshot=snapshot
    )
    assert decision.verdict.reason is Reason.FAMILIAR
